// kesd's unseal key: 32 random bytes, generated once per generation, kept secret in Pulumi state and handed to pods
// via a Secret that Kesd mounts as a file (init.yml `unseal.file`), never as an environment variable.
//
// Rotation: a new `generation` draws a new key into a Secret of its own and keeps the previous generation's Secret,
// which Kesd mounts as init.yml's `unseal.previous`: kesd, started by the rollout, re-seals its root key under the
// new key (boot/rekey.ts). The generation before that is deleted then: by the time a generation is raised again,
// Pulumi has awaited the rollout of the previous one (the data is sealed under it).
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import * as random from '@pulumi/random';
import { labels, UNSEAL_SECRET_KEY, type UnsealKeyRef } from './contracts';

export interface UnsealKeyArgs {
  namespace: pulumi.Input<string>;
  provider: k8s.Provider;
  /** 0 (the default) is the key every stack starts with; raise it by one to rotate the key. */
  generation?: number;
}

/** The unseal key length kesd requires (AES-256). */
export const UNSEAL_KEY_BYTES = 32;

/** The Pulumi and Kubernetes names of one generation: generation 0 keeps the names from before rotation existed. */
export function unsealKeyNames(
  name: string,
  generation: number,
): { bytes: string; secret: string; objectName: string } {
  if (!Number.isInteger(generation) || generation < 0)
    throw new Error(`UnsealKey: generation must be a whole number from 0, got ${generation}`);
  const suffix = generation === 0 ? '' : `-g${generation}`;
  return { bytes: `${name}-bytes${suffix}`, secret: `${name}-secret${suffix}`, objectName: `${name}${suffix}` };
}

export class UnsealKey extends pulumi.ComponentResource implements UnsealKeyRef {
  readonly secretName: pulumi.Output<string>;
  readonly secretKey = UNSEAL_SECRET_KEY;
  readonly previousSecretName: pulumi.Output<string> | undefined;
  readonly generation: number;

  constructor(name: string, args: UnsealKeyArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:UnsealKey', name, {}, opts);
    this.generation = args.generation ?? 0;
    const keySecret = (generation: number): k8s.core.v1.Secret => {
      const names = unsealKeyNames(name, generation);
      // No keepers: the bytes never change after the first `pulumi up`. A new key would strand the sealed root key.
      const key = new random.RandomBytes(names.bytes, { length: UNSEAL_KEY_BYTES }, { parent: this });
      return new k8s.core.v1.Secret(
        names.secret,
        {
          metadata: { name: names.objectName, namespace: args.namespace, labels: labels('kesd', 'unseal-key') },
          type: 'Opaque',
          // kesd reads the key file as base64 text, so the Secret holds the base64 string itself.
          stringData: { [UNSEAL_SECRET_KEY]: pulumi.secret(key.base64) },
        },
        { parent: this, provider: args.provider },
      );
    };
    this.secretName = keySecret(this.generation).metadata.name;
    this.previousSecretName = this.generation > 0 ? keySecret(this.generation - 1).metadata.name : undefined;

    this.registerOutputs({
      secretName: this.secretName,
      secretKey: this.secretKey,
      previousSecretName: this.previousSecretName,
      generation: this.generation,
    });
  }
}
