// Runs the Pulumi program the way pulumi-language-nodejs does (Pulumi's own run entry, `@pulumi/pulumi/cmd/run`,
// which compiles the program with its ts-node from the project's tsconfig), against a fake resource monitor and
// engine served over gRPC here. No Pulumi CLI, no providers: what it proves is that the program compiles and runs
// under Pulumi's runtime and what it registers and logs. The fake speaks the SDK's own generated service definitions
// and the SDK's own grpc-js (resolved from @pulumi/pulumi, so no second copy or version of either).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { parse } from 'yaml';

const fromSdk = createRequire(createRequire(import.meta.url).resolve('@pulumi/pulumi/package.json'));
// The generated protobuf modules, loaded at run time, are typed loosely (any).
const grpc = fromSdk('@grpc/grpc-js') as typeof import('@grpc/grpc-js');
const resourceGrpc = fromSdk('./proto/resource_grpc_pb.js') as any;
const resourcePb = fromSdk('./proto/resource_pb.js') as any;
const engineGrpc = fromSdk('./proto/engine_grpc_pb.js') as any;
const enginePb = fromSdk('./proto/engine_pb.js') as any;
const emptyPb = fromSdk('google-protobuf/google/protobuf/empty_pb.js') as any;
const structPb = fromSdk('google-protobuf/google/protobuf/struct_pb.js') as any;

export interface Registration {
  readonly type: string;
  readonly name: string;
  readonly urn: string;
  readonly custom: boolean;
  readonly remote: boolean;
  /** The provider reference (`urn::id`) the resource was registered with; '' means the engine's default provider. */
  readonly provider: string;
  readonly parent: string;
  /** URNs of the resources it depends on (dependsOn and its inputs' resources). */
  readonly dependencies: string[];
}

export interface HostRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly registrations: Registration[];
  /** What the program passed to RegisterResourceOutputs for its stack: the stack outputs. */
  readonly stackOutputs: Record<string, unknown> | undefined;
  /** Engine log messages: severity (debug, info, warning, error) and text. */
  readonly logs: { severity: string; message: string }[];
}

/** The runtime options of Pulumi.yaml, read as the language host reads them (typescript defaults to true). */
export function runtimeOptions(projectDir: string): {
  name: string;
  typescript: boolean;
  tsconfig?: string;
  nodeargs: string[];
  main: string;
} {
  const doc = parse(readFileSync(resolve(projectDir, 'Pulumi.yaml'), 'utf8')) as {
    name: string;
    main?: string;
    runtime: string | { name: string; options?: { typescript?: boolean; tsconfig?: string; nodeargs?: string } };
  };
  const options = typeof doc.runtime === 'string' ? {} : (doc.runtime.options ?? {});
  return {
    name: doc.name,
    typescript: options.typescript ?? true,
    tsconfig: options.tsconfig,
    nodeargs: (options.nodeargs ?? '').split(/\s+/).filter(Boolean),
    main: doc.main ?? '.',
  };
}

const SEVERITY = ['debug', 'info', 'warning', 'error'];

/** Serves a monitor and an engine on loopback, runs the program once (a preview), and reports what it did. */
export async function runLikeLanguageHost(opts: {
  projectDir: string;
  stack: string;
  config: Record<string, string>;
  timeoutMs?: number;
}): Promise<HostRun> {
  const project = runtimeOptions(opts.projectDir);
  const registrations: Registration[] = [];
  const logs: HostRun['logs'] = [];
  let stackUrn = '';
  let stackOutputs: Record<string, unknown> | undefined;

  const features = [
    resourcePb.ResourceMonitorFeature.RESOURCE_MONITOR_FEATURE_SECRETS,
    resourcePb.ResourceMonitorFeature.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES,
    resourcePb.ResourceMonitorFeature.RESOURCE_MONITOR_FEATURE_OUTPUT_VALUES,
    resourcePb.ResourceMonitorFeature.RESOURCE_MONITOR_FEATURE_ALIAS_SPECS,
    resourcePb.ResourceMonitorFeature.RESOURCE_MONITOR_FEATURE_DELETED_WITH,
  ];
  type Callback = (err: Error | null, resp?: unknown) => void;
  const monitor = {
    getDeploymentInfo(_call: unknown, cb: Callback) {
      cb(null, new resourcePb.DeploymentInfo().setSupportedfeaturesList(features));
    },
    supportsFeature(_call: unknown, cb: Callback) {
      cb(null, new resourcePb.SupportsFeatureResponse().setHassupport(false));
    },
    registerResource(call: { request: any }, cb: Callback) {
      const r = call.request;
      const parent: string = r.getParent();
      // The engine's URN: the parent's type chain (the root stack is left out), then this type and name.
      const parentTypes = parent && parent !== stackUrn ? parent.split('::')[2] + '$' : '';
      const urn = `urn:pulumi:${opts.stack}::${project.name}::${parentTypes}${r.getType()}::${r.getName()}`;
      registrations.push({
        type: r.getType(),
        name: r.getName(),
        urn,
        custom: r.getCustom(),
        remote: r.getRemote(),
        provider: r.getProvider(),
        parent,
        dependencies: r.getDependenciesList(),
      });
      if (r.getType() === 'pulumi:pulumi:Stack') stackUrn = urn;
      // A preview: custom resources have no id yet; outputs echo the inputs, as the engine does for unknown state.
      const resp = new resourcePb.RegisterResourceResponse()
        .setUrn(urn)
        .setId('')
        .setObject(r.getObject() ?? new structPb.Struct());
      cb(null, resp);
    },
    registerResourceOutputs(call: { request: any }, cb: Callback) {
      if (call.request.getUrn() === stackUrn) stackOutputs = call.request.getOutputs()?.toJavaScript() ?? {};
      cb(null, new emptyPb.Empty());
    },
    invoke(call: { request: any }, cb: Callback) {
      logs.push({ severity: 'error', message: `unexpected invoke ${call.request.getTok()}` });
      cb(null, new resourcePb.ResourceInvokeResponse().setReturn(new structPb.Struct()));
    },
    signalAndWaitForShutdown(_call: unknown, cb: Callback) {
      cb(null, new emptyPb.Empty());
    },
  };
  let root = '';
  const engine = {
    log(call: { request: any }, cb: Callback) {
      logs.push({ severity: SEVERITY[call.request.getSeverity()] ?? 'unknown', message: call.request.getMessage() });
      cb(null, new emptyPb.Empty());
    },
    getRootResource(_call: unknown, cb: Callback) {
      cb(null, new enginePb.GetRootResourceResponse().setUrn(root));
    },
    setRootResource(call: { request: any }, cb: Callback) {
      root = call.request.getUrn();
      cb(null, new enginePb.SetRootResourceResponse());
    },
  };

  const server = new grpc.Server();
  server.addService(resourceGrpc.ResourceMonitorService, monitor as any);
  server.addService(engineGrpc.EngineService, engine as any);
  const port = await new Promise<number>((ok, fail) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? fail(err) : ok(p))),
  );
  const address = `127.0.0.1:${port}`;

  // What pulumi-language-nodejs runs: node [nodeargs] <require.resolve('@pulumi/pulumi/cmd/run') from the program
  // dir> --monitor --engine --project --root-directory --stack --pwd --dry-run --parallel <entry point>, with the
  // config in PULUMI_CONFIG (keys as <namespace>:config:<name>) and PULUMI_NODEJS_TYPESCRIPT / _TSCONFIG_PATH.
  const runPath = createRequire(resolve(opts.projectDir, 'package.json')).resolve('@pulumi/pulumi/cmd/run');
  const args = [
    ...project.nodeargs,
    runPath,
    '--monitor',
    address,
    '--engine',
    address,
    '--project',
    project.name,
    '--root-directory',
    opts.projectDir,
    '--stack',
    opts.stack,
    '--pwd',
    opts.projectDir,
    '--dry-run',
    '--parallel',
    '4',
    project.main,
  ];
  const config = Object.fromEntries(
    Object.entries(opts.config).map(([k, v]) => [k.replace(/^([^:]+):/, '$1:config:'), v]),
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PULUMI_CONFIG: JSON.stringify(config),
    PULUMI_CONFIG_SECRET_KEYS: '[]',
  };
  // The test runner's own variables would not be in a user's shell.
  delete env.NODE_OPTIONS;
  delete env.NODE_TEST_CONTEXT;
  if (project.typescript) env.PULUMI_NODEJS_TYPESCRIPT = 'true';
  if (project.tsconfig) env.PULUMI_NODEJS_TSCONFIG_PATH = project.tsconfig;

  try {
    const child = spawn(process.execPath, args, { cwd: opts.projectDir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 240_000);
    const code = await new Promise<number | null>((ok) => child.on('close', (c) => ok(c)));
    clearTimeout(timer);
    return { code, stdout, stderr, registrations, stackOutputs, logs };
  } finally {
    server.forceShutdown();
  }
}
