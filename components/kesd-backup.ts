// An optional backup schedule for kesd on the embedded store (one replica): a CronJob that runs `kesd backup
// --server` against kesd's Service and keeps the newest N backups on a PVC of its own. kesd's PVC is ReadWriteOnce and
// mounted by kesd, so the job asks kesd for the backup (GET /v1/sys/backup) with an identity of its own that may do
// nothing else (init.yml system.backup.identities). The backups are sealed: they open only with the unseal key of
// their moment, which is not on that PVC.
import * as pulumi from '@pulumi/pulumi';
import * as k8s from '@pulumi/kubernetes';
import { labels, type TlsIdentity } from './contracts';
import { KESD_ADMIN_LABELS } from './kesd';
import { KESD_CONTAINER_SECURITY_CONTEXT, KESD_POD_SECURITY_CONTEXT } from './kesd-config';

export interface KesdBackupSchedule {
  /** A cron schedule (five fields), in the cluster's time zone. */
  readonly schedule: string;
  /** Backups kept on the volume (the oldest go first). */
  readonly keep: number;
  readonly storageSize: string;
  readonly storageClass?: string;
}

export interface KesdBackupArgs extends KesdBackupSchedule {
  namespace: pulumi.Input<string>;
  /** kesd's image: the job runs the same `kesd`. */
  image: pulumi.Input<string>;
  /** kesd's client Service URL. */
  serviceUrl: pulumi.Input<string>;
  caCertPem: pulumi.Output<string>;
  /** The job's identity (init.yml system.backup.identities names it). */
  client: TlsIdentity;
  provider: k8s.Provider;
}

export const KESD_BACKUP_NAMES = {
  cronJob: 'kesd-backup',
  claim: 'kesd-backups',
  clientSecret: 'kesd-backup-client',
} as const;
const BACKUP_DIR = '/backups';
const CLIENT_DIR = '/etc/kesd-backup';
const FIVE_FIELDS = /^\S+(\s+\S+){4}$/;

/** The backup container's command line: into the volume, pruned to `keep`. */
export function kesdBackupArgs(serviceUrl: string, keep: number): string[] {
  if (!Number.isInteger(keep) || keep < 1 || keep > 9999)
    throw new Error(`kesd backup: keep must be a whole number from 1 to 9999, got ${keep}`);
  return ['backup', '--server', serviceUrl, '--keep', String(keep), BACKUP_DIR];
}

export class KesdBackup extends pulumi.ComponentResource {
  readonly cronJob: k8s.batch.v1.CronJob;

  constructor(name: string, args: KesdBackupArgs, opts?: pulumi.ComponentResourceOptions) {
    super('stateful-kes:index:KesdBackup', name, {}, opts);
    if (!FIVE_FIELDS.test(args.schedule.trim()))
      throw new Error(`KesdBackup: schedule '${args.schedule}' is not a five-field cron schedule`);
    const k8sOpts = { parent: this, provider: args.provider };
    const meta = (objectName: string) => ({
      name: objectName,
      namespace: args.namespace,
      labels: labels('kesd', 'backup'),
    });

    const claim = new k8s.core.v1.PersistentVolumeClaim(
      `${name}-pvc`,
      {
        metadata: meta(KESD_BACKUP_NAMES.claim),
        spec: {
          accessModes: ['ReadWriteOnce'],
          resources: { requests: { storage: args.storageSize } },
          ...(args.storageClass ? { storageClassName: args.storageClass } : {}),
        },
      },
      // The backups outlive a `pulumi destroy` of the job only if you keep the PVC: it is not protected here.
      k8sOpts,
    );
    const client = new k8s.core.v1.Secret(
      `${name}-client`,
      {
        metadata: meta(KESD_BACKUP_NAMES.clientSecret),
        type: 'kubernetes.io/tls',
        stringData: {
          'tls.crt': args.client.certPem,
          'tls.key': pulumi.secret(args.client.keyPem),
          'ca.crt': args.caCertPem,
        },
      },
      k8sOpts,
    );

    this.cronJob = new k8s.batch.v1.CronJob(
      `${name}-cron`,
      {
        metadata: meta(KESD_BACKUP_NAMES.cronJob),
        spec: {
          schedule: args.schedule,
          concurrencyPolicy: 'Forbid',
          successfulJobsHistoryLimit: 3,
          failedJobsHistoryLimit: 3,
          jobTemplate: {
            spec: {
              backoffLimit: 2,
              activeDeadlineSeconds: 3600,
              template: {
                // The admin label lets the job through kesd's NetworkPolicy.
                metadata: { labels: { ...labels('kesd', 'backup'), ...KESD_ADMIN_LABELS } },
                spec: {
                  restartPolicy: 'Never',
                  automountServiceAccountToken: false,
                  enableServiceLinks: false,
                  securityContext: KESD_POD_SECURITY_CONTEXT,
                  containers: [
                    {
                      name: 'backup',
                      image: args.image,
                      imagePullPolicy: 'IfNotPresent',
                      args: pulumi.output(args.serviceUrl).apply((url) => kesdBackupArgs(url, args.keep)),
                      env: [
                        { name: 'KES_CLIENT_CERT', value: `${CLIENT_DIR}/tls.crt` },
                        { name: 'KES_CLIENT_KEY', value: `${CLIENT_DIR}/tls.key` },
                        { name: 'KES_CA', value: `${CLIENT_DIR}/ca.crt` },
                      ],
                      resources: { requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '500m', memory: '256Mi' } },
                      securityContext: KESD_CONTAINER_SECURITY_CONTEXT,
                      volumeMounts: [
                        { name: 'backups', mountPath: BACKUP_DIR },
                        { name: 'client', mountPath: CLIENT_DIR, readOnly: true },
                      ],
                    },
                  ],
                  volumes: [
                    { name: 'backups', persistentVolumeClaim: { claimName: claim.metadata.name } },
                    { name: 'client', secret: { secretName: client.metadata.name, defaultMode: 0o440 } },
                  ],
                },
              },
            },
          },
        },
      },
      k8sOpts,
    );
    this.registerOutputs({ cronJob: this.cronJob });
  }
}
