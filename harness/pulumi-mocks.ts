// Pulumi mocks for component tests: records every resource (type, name, inputs, provider, parent) and fills in
// provider-computed outputs through per-type hooks (e.g. real certificates for @pulumi/tls, see tls-mock.ts).
// Import the code under test only AFTER setupMocks(): `const { Kesd } = await import('../components/kesd.ts')`.
import * as pulumi from '@pulumi/pulumi';

export interface RecordedResource {
  readonly type: string;
  readonly name: string;
  readonly inputs: Record<string, any>;
  readonly provider: string;
  readonly custom: boolean;
}

export type ComputedOutputs = (
  args: pulumi.runtime.MockResourceArgs,
) => Record<string, unknown> | Promise<Record<string, unknown>>;

export const recorded: RecordedResource[] = [];
const hooks = new Map<string, ComputedOutputs>();

/** Registers computed outputs for a resource type token, e.g. 'random:index/randomBytes:RandomBytes'. */
export function onResource(type: string, compute: ComputedOutputs): void {
  hooks.set(type, compute);
}

export async function setupMocks(
  opts: { config?: Record<string, string>; preview?: boolean; stack?: string } = {},
): Promise<void> {
  if (opts.config) pulumi.runtime.setAllConfig(opts.config, []);
  await pulumi.runtime.setMocks(
    {
      async newResource(args) {
        const computed = (await hooks.get(args.type)?.(args)) ?? {};
        const metadata = args.inputs.metadata ? { name: args.name, ...args.inputs.metadata } : undefined;
        recorded.push({
          type: args.type,
          name: args.name,
          inputs: args.inputs,
          provider: args.provider ?? '',
          custom: args.custom ?? true,
        });
        return { id: `${args.name}-id`, state: { ...args.inputs, ...(metadata ? { metadata } : {}), ...computed } };
      },
      call: (args) => args.inputs,
    },
    'stateful-kes',
    opts.stack ?? 'dev',
    opts.preview ?? false,
  );
}

/** The value of an Output (test helper; resolves to undefined for unknowns in non-preview mocks). */
export function outputValue<T>(output: pulumi.Output<T> | pulumi.Input<T>): Promise<T> {
  return new Promise((resolve) => pulumi.output(output).apply((v) => resolve(v as T)));
}

/** Whether an Output is marked secret. */
export function isSecret(output: pulumi.Output<unknown>): Promise<boolean> {
  return pulumi.isSecret(output);
}

/** Deep-unwraps Pulumi secret envelopes that mocks hand to newResource ({'4dabf18193072939515e22adb298388d': …}). */
export function unsecret<T>(value: T): T {
  if (Array.isArray(value)) return value.map(unsecret) as T;
  if (value !== null && typeof value === 'object') {
    const v = value as Record<string, unknown>;
    if (v['4dabf18193072939515e22adb298388d'] === '1b47061264138c4ac30d75fd1eb44270') return unsecret(v.value as T);
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unsecret(x)])) as T;
  }
  return value;
}

/**
 * Records each child's parent and dependsOn: pass as the component's `transformations` option (it propagates to
 * children); mocks do not see parents otherwise.
 */
export const lineage = new Map<string, { parent: string | undefined; dependsOn: unknown }>();
export const recordLineage: pulumi.ResourceTransformation = (a) => {
  lineage.set(a.name, {
    parent: (a.opts.parent as { __name?: string } | undefined)?.__name,
    dependsOn: a.opts.dependsOn,
  });
  return undefined;
};

export function byType(type: string): RecordedResource[] {
  return recorded.filter((r) => r.type === type);
}
