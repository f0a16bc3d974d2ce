// Every stack output the README documents for StackReference consumers: the runtime test (Pulumi's own entry
// point) and the engine suite (the real engine) both check that the program exports exactly these.
export const DOCUMENTED_OUTPUTS: readonly string[] = [
  'consoleEndpoint',
  'defaultKey',
  'enclaveAdminCert',
  'enclaveAdminKey',
  'etcdEndpoints',
  'identitiesHex',
  'kesdCaCert',
  'kesdEndpoint',
  'kesdMinioEndpoint',
  'kesdNamespace',
  'kesdServiceAccount',
  'kubeconfig',
  'rootPassword',
  'rootUser',
  's3Endpoint',
  'tenantNamespace',
];
