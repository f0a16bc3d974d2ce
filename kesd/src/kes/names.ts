// Name and pattern rules of the newest KES (kes-protocol §4.3), shared by the API and init.yml validation.
const NAME = /^[0-9A-Za-z_-]{1,80}$/;

/** 1–80 chars of [0-9A-Za-z_-], '-' neither first nor last, '_' alone rejected. */
export function isValidName(name: string): boolean {
  return NAME.test(name) && name[0] !== '-' && name[name.length - 1] !== '-' && name !== '_';
}

/** A listing pattern: empty or '*' (all), or a name prefix with an optional trailing '*'. */
export function isValidListPattern(pattern: string): boolean {
  if (pattern === '' || pattern === '*') return true;
  const stem = pattern.endsWith('*') ? pattern.slice(0, -1) : pattern;
  return stem.length <= 80 && /^[0-9A-Za-z_-]*$/.test(stem) && stem !== '_';
}

/** The prefix a listing pattern selects ('' = everything). */
export function listPrefix(pattern: string): string {
  return pattern.endsWith('*') ? pattern.slice(0, -1) : pattern;
}

/** Whether a listing pattern matches a name: trailing '*' = prefix, '' or '*' = all, else exact. */
export function matchesListPattern(pattern: string, name: string): boolean {
  if (pattern === '' || pattern.endsWith('*')) return name.startsWith(listPrefix(pattern));
  return name === pattern;
}

const IDENTITY = /^[0-9a-f]{64}$/;
/** A KES identity: lowercase hex SHA-256. */
export function isValidIdentity(identity: string): boolean {
  return IDENTITY.test(identity);
}
