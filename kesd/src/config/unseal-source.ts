// Where the unseal key comes from: an environment variable (init.yml `unseal.environment.name`, as in KES v0.22) or a
// file (`unseal.file.path`, kesd's extension). Reading the key itself is store/unseal-key.ts's.
export type UnsealSource = { readonly env: string } | { readonly file: string };

export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function describeUnsealSource(source: UnsealSource): string {
  return 'env' in source ? `environment variable ${source.env}` : `file ${source.file}`;
}

export const sameUnsealSource = (a: UnsealSource, b: UnsealSource): boolean =>
  'env' in a ? 'env' in b && a.env === b.env : 'file' in b && a.file === b.file;
