// Reported by /version and `kesd --version`.
export const VERSION = { version: '0.1.0', commit: process.env.KESD_COMMIT ?? '' };
