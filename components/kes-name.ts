// The KES name rule (kes-protocol §4.3) for key and enclave names, the one the Pulumi side checks everywhere. kesd
// enforces the same rule (kesd/src/kes/names.ts), which this program may not import: test/components/kes-name.test.ts
// checks that the two agree. Checking here reports a bad name at preview instead of kesd refusing it at start.

/** 1-80 of [0-9A-Za-z_-], '-' neither first nor last, '_' alone rejected. */
export const KES_NAME = /^(?!-)(?!_$)[0-9A-Za-z_-]{1,80}(?<!-)$/;

/** The rule in words, for error messages. */
export const KES_NAME_RULE = "1-80 of [0-9A-Za-z_-], '-' not first or last, not '_'";

export function isKesName(name: string): boolean {
  return KES_NAME.test(name);
}
