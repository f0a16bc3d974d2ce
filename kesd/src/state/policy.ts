// Policy patterns use the newest KES semantics: a trailing '*' is a prefix match, anything else is exact.
// Other glob syntax would silently never match, so it is rejected up front.
export interface PolicyRules {
  readonly allow: readonly string[];
  readonly deny: readonly string[];
}

export function patternError(pattern: string): string | undefined {
  if (pattern === '') return `pattern is empty`;
  const stem = pattern.endsWith('*') ? pattern.slice(0, -1) : pattern;
  if (/[*?[\\]/.test(stem)) {
    return `pattern '${pattern}' uses glob syntax that kesd does not support; only a trailing '*' is a wildcard`;
  }
  return undefined;
}

function matches(pattern: string, path: string): boolean {
  return pattern.endsWith('*') ? path.startsWith(pattern.slice(0, -1)) : path === pattern;
}

/** Deny wins; otherwise at least one allow pattern must match the request path. */
export function isAllowed(policy: PolicyRules, path: string): boolean {
  for (const p of policy.deny) if (matches(p, path)) return false;
  for (const p of policy.allow) if (matches(p, path)) return true;
  return false;
}
