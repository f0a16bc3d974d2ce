// The Pulumi program: reads config, composes the components in components/, and exports the stack outputs.
// It holds no logic. The components (KindCluster, MinioOperator, KesIdentities, UnsealKey, Kesd, MinioTenant)
// are not written yet: this program deploys nothing until they are (see the open Pulumi issue).
export {};
