// kesd's unseal key: 32 random bytes, generated once, kept secret in Pulumi state and handed to pods via a Secret
// that Kesd mounts as a file (init.yml `unseal.file`), never as an environment variable.
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import * as random from '@pulumi/random';
import { labels, UNSEAL_SECRET_KEY, type UnsealKeyRef } from './contracts';

export interface UnsealKeyArgs {
  namespace: pulumi.Input<string>;
  provider: k8s.Provider;
}

/** The unseal key length kesd requires (AES-256). */
export const UNSEAL_KEY_BYTES = 32;

export class UnsealKey extends pulumi.ComponentResource implements UnsealKeyRef {
  readonly secretName: pulumi.Output<string>;
  readonly secretKey = UNSEAL_SECRET_KEY;

  constructor(name: string, args: UnsealKeyArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:UnsealKey', name, {}, opts);

    // No keepers: the bytes never change after the first `pulumi up`. A new key would strand the sealed root key.
    const key = new random.RandomBytes(`${name}-bytes`, { length: UNSEAL_KEY_BYTES }, { parent: this });

    const secret = new k8s.core.v1.Secret(
      `${name}-secret`,
      {
        metadata: { name, namespace: args.namespace, labels: labels('kesd', 'unseal-key') },
        type: 'Opaque',
        // kesd reads the key file as base64 text, so the Secret holds the base64 string itself.
        stringData: { [UNSEAL_SECRET_KEY]: pulumi.secret(key.base64) },
      },
      { parent: this, provider: args.provider },
    );
    this.secretName = secret.metadata.name;

    this.registerOutputs({ secretName: this.secretName, secretKey: this.secretKey });
  }
}
