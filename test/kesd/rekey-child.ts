// A child process for the rekey crash tests: runs rekeyDataDir (what `kesd rekey` runs) on argv[2], printing each
// step it reaches, and kills itself with SIGKILL at the step named in argv[3] ('none': runs to the end).
//   node --import tsx test/kesd/rekey-child.ts <dir> <step|none> <new key file>
// The current unseal key comes from where the data dir records it (the environment).
import { rekeyDataDir } from '../../kesd/src/boot/rekey.js';

const [dir, crashAt, newKeyFile] = process.argv.slice(2);
const outcome = await rekeyDataDir(dir!, {
  next: { file: newKeyFile! },
  env: process.env,
  onStep(step) {
    process.stdout.write(`step ${step}\n`);
    if (step === crashAt) process.kill(process.pid, 'SIGKILL');
  },
});
process.stdout.write(`outcome ${outcome}\n`);
