// Layer rules for kesd (docs/architecture.md): imports only point down, never in a cycle.
//   cli → server → boot → api → log, upstream → state → store → kes, crypto, identity, config, client
const S = '^kesd/src/';
const layers = [
  ['cli', `${S}(cli/|cli\\.ts$|dev\\.ts$)`],
  ['server', `${S}server/`],
  ['boot', `${S}(boot|migrate)/`],
  ['api', `${S}api/`],
  ['log', `${S}log/`],
  ['upstream', `${S}upstream/`],
  ['state', `${S}state/`],
  ['store', `${S}store/`],
];
const bottom = `${S}(kes|crypto|identity|config|client)/`;
const above = (i) =>
  layers
    .slice(0, i)
    .map(([, p]) => p)
    .join('|');
const upward = layers.slice(1).map(([name, from], i) => ({
  name: `${name}-imports-only-down`,
  severity: 'error',
  comment: `${name} may not import a layer above it`,
  from: { path: from },
  to: { path: above(i + 1) },
}));
module.exports = {
  forbidden: [
    { name: 'no-cycles', severity: 'error', from: {}, to: { circular: true } },
    ...upward,
    { name: 'log-and-state-are-peers', severity: 'error', from: { path: `${S}state/` }, to: { path: `${S}log/` } },
    {
      name: 'log-does-not-import-state',
      severity: 'error',
      from: { path: `${S}log/` },
      to: { path: `${S}(state|upstream)/` },
    },
    {
      name: 'bottom-imports-only-bottom',
      severity: 'error',
      from: { path: bottom },
      to: { path: `${above(layers.length)}` },
    },
    {
      name: 'src-never-imports-tests',
      severity: 'error',
      from: { path: '^(kesd/src|components|scripts|bench)/' },
      to: { path: '^test/' },
    },
    {
      name: 'kesd-stands-alone',
      severity: 'error',
      from: { path: '^kesd/' },
      to: { path: '^(components|test|bench|scripts)/|^index\\.ts$' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'kesd/tsconfig.json' },
    exclude: { path: '(^|/)dist/' },
  },
};
