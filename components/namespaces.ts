// The namespaces kesd and the tenant live in (the operator's own namespace belongs to MinioOperator).
import * as k8s from '@pulumi/kubernetes';
import * as pulumi from '@pulumi/pulumi';
import { labels } from './contracts';

export interface NamespacesArgs {
  readonly names: Record<string, string>;
  readonly provider: k8s.Provider;
}

export class Namespaces extends pulumi.ComponentResource {
  /** Namespace name by role; resolving it waits for the Namespace to exist. */
  readonly names: Record<string, pulumi.Output<string>> = {};

  constructor(name: string, args: NamespacesArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:Namespaces', name, {}, opts);
    for (const [role, ns] of Object.entries(args.names)) {
      const created = new k8s.core.v1.Namespace(
        `${name}-${role}`,
        { metadata: { name: ns, labels: labels('stateful-kes', role) } },
        { parent: this, provider: args.provider },
      );
      this.names[role] = created.metadata.name;
    }
    this.registerOutputs({ names: this.names });
  }
}
