// Reads another process's memory the way a core dump or a debugger would (/proc/<pid>/maps + /proc/<pid>/mem; the
// kernel allows it for a descendant of the same user) and counts where given byte strings occur.
//
// Scanned: every readable mapping except file mappings that are read-only or shared. Those hold the file's bytes
// (the node binary, libraries, the LMDB file, which holds only sealed records), not what the process computed; a
// core dump leaves them out too (coredump_filter's default). Private writable file mappings (.data, .bss) and all
// anonymous memory (heap, stacks, V8's heap, malloc arenas, the initial environment block) are scanned. [vvar] and
// [vsyscall] are skipped: the kernel's, and not readable this way.
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';

export interface Region {
  readonly start: number;
  readonly end: number;
  readonly perms: string;
  readonly name: string;
}

export function scannedRegions(pid: number): Region[] {
  const regions: Region[] = [];
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (m === null) continue;
    const [, start, end, perms, name] = m as unknown as [string, string, string, string, string];
    if (perms[0] !== 'r' || name === '[vvar]' || name === '[vvar_vclock]' || name === '[vsyscall]') continue;
    const file = name.startsWith('/') && !name.startsWith('/memfd:') && !name.endsWith('(deleted)');
    if (file && (perms[1] !== 'w' || perms[3] === 's')) continue;
    regions.push({ start: parseInt(start, 16), end: parseInt(end, 16), perms, name: name || '[anon]' });
  }
  return regions;
}

export interface ScanResult {
  /** Occurrences per needle name. */
  readonly counts: Record<string, number>;
  /** Per needle name, the regions it was found in (e.g. "[heap]", "[stack]", "[anon]"). */
  readonly where: Record<string, string[]>;
  readonly bytes: number;
  readonly regions: number;
  readonly ms: number;
}

const CHUNK = 4 << 20;

/** Counts every occurrence of each needle in the process's scanned memory. */
export function scanProcess(pid: number, needles: Record<string, Buffer>): ScanResult {
  const entries = Object.entries(needles);
  const overlap = Math.max(...entries.map(([, n]) => n.length)) - 1;
  const counts = Object.fromEntries(entries.map(([name]) => [name, 0]));
  const where: Record<string, string[]> = Object.fromEntries(entries.map(([name]) => [name, []]));
  const buf = Buffer.allocUnsafeSlow(CHUNK + overlap);
  const started = Date.now();
  let bytes = 0;
  const regions = scannedRegions(pid);
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const region of regions) {
      let kept = 0; // bytes carried over from the previous chunk, so a needle across chunks is found once
      for (let at = region.start; at < region.end; ) {
        let got: number;
        try {
          got = readSync(fd, buf, kept, Math.min(CHUNK, region.end - at), at);
        } catch {
          break; // a page that cannot be read (a guard page): the rest of this region
        }
        if (got <= 0) break;
        const view = buf.subarray(0, kept + got);
        for (const [name, needle] of entries) {
          for (let i = view.indexOf(needle); i !== -1; i = view.indexOf(needle, i + 1)) {
            if (i + needle.length <= kept) continue; // wholly in the carried bytes: counted last time
            counts[name]!++;
            if (!where[name]!.includes(region.name)) where[name]!.push(region.name);
          }
        }
        bytes += got;
        at += got;
        kept = Math.min(overlap, view.length);
        view.copy(buf, 0, view.length - kept);
      }
    }
  } finally {
    closeSync(fd);
    buf.fill(0);
  }
  return { counts, where, bytes, regions: regions.length, ms: Date.now() - started };
}
