//! The building blocks of drd's declarations: each capability is a few IAM actions on one kind
//! of resource, named after the code that makes the calls. Commands (cli/iam.rs) and runbook
//! steps (`ActionSpec::iam`) are lists of capabilities.

/// Which resources a grant is scoped to; `Scope` (render.rs) turns it into ARNs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Res {
    /// The store bucket and its copies (`ListBucket`, bucket configuration).
    StoreBucket,
    /// Objects under `<bucket>/<stack>/<sub>` of the store and its copies ("" for all).
    StoreObjects(&'static str),
    /// The per-region artifact buckets `<artifacts.bucket_prefix>-<region>`.
    ArtifactBuckets,
    /// Objects in the artifact buckets.
    ArtifactObjects,
    /// The workload's stack.
    Stack,
    /// The standby CI's stack (`<stack>-ci`).
    CiStack,
    /// The function, its versions and aliases.
    Function,
    /// The workload's secrets (`[secrets]`).
    Secrets,
    /// The function's own API-key secret (`secrets.api_key`).
    ApiKeySecret,
    /// The GitHub token secrets (`[github] token_secret`, `[ci] token_secret`).
    TokenSecrets,
    /// `/aws/lambda/<function>`.
    LogGroup,
    /// Hosted zones and their record sets (the zone's id is looked up by name at run time).
    HostedZones,
    /// The front door's HTTP APIs and custom domain names in any region.
    Apis,
    /// `[pipeline] name` and the standby CI's pipeline.
    Pipeline,
    /// The standby CI's CodeBuild projects (`<stack>-*`).
    BuildProjects,
    /// The roles the workload's and the CI's templates create (`<stack>-*`).
    StackRoles,
    /// `[alerts.sns] topic_arn`.
    AlertTopic,
    /// The store's writer role (`backup.role_arn`) and prune role (`backup.prune_role_arn`).
    StoreRoles,
    /// A restore rehearsal's scratch copies, all named `<name>-drd-rehearsal`: the stack, the
    /// function, its log group and roles, the secrets.
    Rehearsal,
    /// Any resource: the action allows no resource scoping (the reason is in `Cap::why`).
    Any,
}

#[derive(Debug)]
pub struct Grant {
    pub actions: &'static [&'static str],
    pub on: Res,
}

/// A named group of grants: what one piece of code needs.
#[derive(Debug)]
pub struct Cap {
    pub name: &'static str,
    /// What uses it (and, for `Res::Any`, why no scoping is possible).
    pub why: &'static str,
    pub grants: &'static [Grant],
}

macro_rules! cap {
    ($id:ident, $name:literal, $why:literal, [$($on:expr => [$($a:literal),* $(,)?]),* $(,)?]) => {
        pub const $id: Cap = Cap {
            name: $name,
            why: $why,
            grants: &[$(Grant { actions: &[$($a),*], on: $on }),*],
        };
    };
}

use Res::*;

cap!(IDENTITY, "identity", "drd check and the store's account check: GetCallerIdentity needs no permission and takes no resource", [
    Any => ["sts:GetCallerIdentity"],
]);
cap!(STORE_READ, "store-read", "store/mod.rs reads: points, manifests, blobs, the index, journals, leases", [
    StoreBucket => ["s3:ListBucket"],
    StoreObjects("") => ["s3:GetObject"],
]);
cap!(STORE_WRITE, "store-write", "store/mod.rs writes: new blobs and points (If-None-Match), the index, journals and leases (If-Match)", [
    StoreObjects("") => ["s3:PutObject"],
]);
cap!(STORE_RELEASE, "store-release", "released leases, the drill marker, alert claims, the newest-point pointer and stale index segments are deleted; points and blobs never are (only prune)", [
    StoreObjects("locks/") => ["s3:DeleteObject"],
    StoreObjects("drills/") => ["s3:DeleteObject"],
    StoreObjects("alerts/") => ["s3:DeleteObject"],
    StoreObjects("index/") => ["s3:DeleteObject"],
    StoreObjects("latest-point.json") => ["s3:DeleteObject"],
]);
cap!(STORE_CREATE, "store-create", "store::ensure_store_bucket: the store bucket (and copies) made on first use, locked when [backup.object_lock] asks", [
    StoreBucket => ["s3:CreateBucket", "s3:PutBucketVersioning", "s3:GetBucketObjectLockConfiguration", "s3:PutBucketObjectLockConfiguration"],
]);
cap!(STORE_PRUNE, "store-prune", "backup/prune.rs: expired points, then the blobs no point references", [
    StoreObjects("points/") => ["s3:DeleteObject"],
    StoreObjects("objects/") => ["s3:DeleteObject"],
]);
cap!(STORE_ASSUME, "store-assume", "store::store_of: the store in its own account is written through backup.role_arn (pruned through backup.prune_role_arn)", [
    StoreRoles => ["sts:AssumeRole"],
]);
cap!(ARTIFACTS, "artifacts", "workload packages and templates uploaded to, and read from, the artifact bucket of each region", [
    ArtifactBuckets => ["s3:CreateBucket", "s3:ListBucket"],
    ArtifactObjects => ["s3:GetObject", "s3:PutObject"],
]);
cap!(ARTIFACTS_READ, "artifacts-read", "backup/capture.rs: a point's code package copied from the artifact bucket", [
    ArtifactBuckets => ["s3:ListBucket"],
    ArtifactObjects => ["s3:GetObject"],
]);
cap!(STACK_READ, "stack-read", "stack.rs and backup/capture.rs: the stack's status, template, parameters and resources", [
    Stack => ["cloudformation:DescribeStacks", "cloudformation:GetTemplate", "cloudformation:DescribeStackResources", "cloudformation:DescribeStackEvents"],
]);
cap!(STACK_WRITE, "stack-write", "stack.rs: the stack created or updated (CloudFormation acts with the caller's permissions: the template's resources follow)", [
    Stack => ["cloudformation:CreateStack", "cloudformation:UpdateStack"],
    StackRoles => ["iam:CreateRole", "iam:GetRole", "iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:PassRole", "iam:TagRole"],
    Function => ["lambda:CreateFunction", "lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration", "lambda:GetFunction", "lambda:TagResource"],
]);
cap!(STACK_DELETE, "stack-delete", "restore.retire_standby and a failed rehearsal's cleanup: the standby stack deleted", [
    Stack => ["cloudformation:DeleteStack", "cloudformation:DescribeStacks"],
    StackRoles => ["iam:DeleteRole", "iam:DeleteRolePolicy", "iam:DetachRolePolicy"],
    Function => ["lambda:DeleteFunction"],
]);
cap!(FUNCTION_READ, "function-read", "lambda/ops.rs reads: configuration, versions, aliases, the URL, the resource policy, concurrency", [
    Function => ["lambda:GetFunction", "lambda:GetFunctionConfiguration", "lambda:ListVersionsByFunction", "lambda:ListAliases", "lambda:GetAlias", "lambda:GetFunctionUrlConfig", "lambda:GetPolicy", "lambda:GetFunctionConcurrency"],
]);
cap!(FUNCTION_LIST, "function-list", "drd check: ListFunctions takes no resource", [
    Any => ["lambda:ListFunctions"],
]);
cap!(FUNCTION_INVOKE, "function-invoke", "lambda/probe.rs: a candidate version invoked, the Function URL called signed (AWS_IAM)", [
    Function => ["lambda:InvokeFunction", "lambda:InvokeFunctionUrl"],
]);
cap!(FUNCTION_PUBLISH, "function-publish", "lambda/ops.rs: versions published, the live alias made and moved", [
    Function => ["lambda:PublishVersion", "lambda:CreateAlias", "lambda:UpdateAlias"],
]);
cap!(FUNCTION_CODE, "function-code", "secret rotation's candidate and a drill's broken version: $LATEST's code or configuration changed", [
    Function => ["lambda:UpdateFunctionCode", "lambda:UpdateFunctionConfiguration"],
]);
cap!(FUNCTION_URL, "function-url", "lambda/ops.rs ensure_function_url: the AWS_IAM Function URL on live and its public statements removed; the front door's invoke statement", [
    Function => ["lambda:CreateFunctionUrlConfig", "lambda:UpdateFunctionUrlConfig", "lambda:AddPermission", "lambda:RemovePermission"],
]);
cap!(FUNCTION_DELETE_VERSION, "function-delete-version", "drill corrupt-live: the broken version deleted by qualifier", [
    Function => ["lambda:DeleteFunction"],
]);
cap!(FUNCTION_THROTTLE, "function-throttle", "drill fault throttle: reserved concurrency 0, and the reservation put back", [
    Function => ["lambda:PutFunctionConcurrency", "lambda:DeleteFunctionConcurrency"],
]);
cap!(SECRETS_READ, "secrets-read", "backup/capture.rs and restore: the secrets' versions and values (values are encrypted at once to the age recipients)", [
    Secrets => ["secretsmanager:DescribeSecret", "secretsmanager:ListSecretVersionIds", "secretsmanager:GetSecretValue"],
]);
cap!(SECRETS_DESCRIBE, "secrets-describe", "deploy and check: whether the API-key secret exists", [
    Secrets => ["secretsmanager:DescribeSecret"],
]);
cap!(SECRETS_CREATE, "secrets-create", "deploy (an empty API-key secret) and restore (secrets recreated from a point, or restored from their deletion window)", [
    Secrets => ["secretsmanager:CreateSecret", "secretsmanager:RestoreSecret", "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage", "secretsmanager:TagResource"],
]);
cap!(SECRETS_ROTATE, "secrets-rotate", "actions/secret.rs: a new value staged AWSPENDING, promoted, or unstaged", [
    Secrets => ["secretsmanager:ListSecretVersionIds", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage"],
]);
cap!(TOKEN_READ, "token-read", "github.rs: the GitHub tokens drd uses are read from Secrets Manager", [
    TokenSecrets => ["secretsmanager:GetSecretValue"],
]);
cap!(LOGS, "logs", "deploy and restore: the function's log group made with 7 days' retention (drd's, outside the stack)", [
    LogGroup => ["logs:CreateLogGroup", "logs:PutRetentionPolicy"],
    Any => ["logs:DescribeLogGroups"],
]);
cap!(LOGS_READ, "logs-read", "backup/capture.rs: the log group's retention recorded (DescribeLogGroups is authorized on the account's log groups, not one)", [
    Any => ["logs:DescribeLogGroups"],
]);
cap!(DNS_READ, "dns-read", "dns.rs: the zone found by name (ListHostedZonesByName and ListHealthChecks take no resource) and its records read", [
    Any => ["route53:ListHostedZonesByName", "route53:ListHealthChecks"],
    HostedZones => ["route53:GetHostedZone", "route53:ListResourceRecordSets"],
]);
cap!(DNS_WRITE, "dns-write", "dns.rs: the failover records changed and a health check made (CreateHealthCheck takes no resource)", [
    HostedZones => ["route53:ChangeResourceRecordSets"],
    Any => ["route53:CreateHealthCheck"],
]);
cap!(DOOR_READ, "door-read", "frontdoor.rs: the door's API, stage, route, integration, domain and mapping read", [
    Apis => ["apigateway:GET"],
]);
cap!(DOOR_WRITE, "door-write", "frontdoor.rs ensure: the door made or repaired; certificates are listed (ListCertificates takes no resource)", [
    Apis => ["apigateway:GET", "apigateway:POST", "apigateway:PATCH"],
    Any => ["acm:ListCertificates"],
]);
cap!(DOOR_DELETE, "door-delete", "frontdoor.rs remove: a retired standby's door deleted", [
    Apis => ["apigateway:GET", "apigateway:DELETE"],
]);
cap!(PIPELINE_RUN, "pipeline-run", "actions/pipeline.rs: the pipeline's executions read, a failed stage retried or a run started", [
    Pipeline => ["codepipeline:GetPipeline", "codepipeline:GetPipelineState", "codepipeline:GetPipelineExecution", "codepipeline:ListPipelineExecutions", "codepipeline:RetryStageExecution", "codepipeline:StartPipelineExecution"],
]);
cap!(CI_INSTALL, "ci-install", "ci/mod.rs install: the standby CI's stack, pipeline, projects and source bucket", [
    CiStack => ["cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents", "cloudformation:DescribeStackResources", "cloudformation:CreateStack", "cloudformation:UpdateStack", "cloudformation:GetTemplate"],
    Pipeline => ["codepipeline:CreatePipeline", "codepipeline:UpdatePipeline", "codepipeline:GetPipeline"],
    BuildProjects => ["codebuild:CreateProject", "codebuild:UpdateProject", "codebuild:BatchGetProjects", "codebuild:DeleteProject"],
    StackRoles => ["iam:CreateRole", "iam:GetRole", "iam:PutRolePolicy", "iam:AttachRolePolicy", "iam:PassRole"],
    ArtifactBuckets => ["s3:CreateBucket", "s3:ListBucket", "s3:GetBucketVersioning", "s3:PutBucketVersioning"],
    ArtifactObjects => ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"],
]);
cap!(REHEARSAL, "rehearsal", "restore/rehearsal.rs (drill restore-rehearsal): the point restored under scratch names (`-drd-rehearsal`) into a scratch region, then everything it made deleted, the artifact bucket only when the rehearsal made it", [
    Rehearsal => [
        "cloudformation:CreateStack", "cloudformation:DescribeStacks", "cloudformation:DescribeStackEvents", "cloudformation:DescribeStackResources", "cloudformation:GetTemplate", "cloudformation:DeleteStack",
        "lambda:CreateFunction", "lambda:DeleteFunction", "lambda:GetFunction", "lambda:GetFunctionConfiguration", "lambda:ListVersionsByFunction", "lambda:PublishVersion", "lambda:GetAlias", "lambda:CreateAlias", "lambda:UpdateAlias", "lambda:GetFunctionUrlConfig", "lambda:CreateFunctionUrlConfig", "lambda:AddPermission", "lambda:RemovePermission", "lambda:GetPolicy", "lambda:InvokeFunction", "lambda:InvokeFunctionUrl", "lambda:TagResource",
        "secretsmanager:CreateSecret", "secretsmanager:DescribeSecret", "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage", "secretsmanager:GetSecretValue", "secretsmanager:ListSecretVersionIds", "secretsmanager:DeleteSecret", "secretsmanager:TagResource",
        "logs:CreateLogGroup", "logs:PutRetentionPolicy", "logs:DeleteLogGroup",
        "iam:CreateRole", "iam:GetRole", "iam:DeleteRole", "iam:PutRolePolicy", "iam:GetRolePolicy", "iam:DeleteRolePolicy", "iam:AttachRolePolicy", "iam:DetachRolePolicy", "iam:PassRole", "iam:TagRole",
    ],
    ArtifactBuckets => ["s3:DeleteBucket"],
    ArtifactObjects => ["s3:DeleteObject"],
]);
cap!(ALARMS_READ, "alarms-read", "drill/alarm.rs: the drill's stop alarms read (DescribeAlarms by name is authorized on alarm ARNs the policy does not know)", [
    Any => ["cloudwatch:DescribeAlarms"],
]);
cap!(FUNCTION_OWN_SECRET, "function-own-secret", "classifier/src/key.rs: the function reads its API key (its logs are written by the Lambda service through AWSLambdaBasicExecutionRole)", [
    ApiKeySecret => ["secretsmanager:GetSecretValue"],
]);
cap!(ALERTS, "alerts", "daemon/alerts.rs: an alert published", [
    AlertTopic => ["sns:Publish"],
]);

/// Every capability, for the docs and the tests.
pub const ALL: &[&Cap] = &[
    &IDENTITY,
    &STORE_READ,
    &STORE_WRITE,
    &STORE_RELEASE,
    &STORE_CREATE,
    &STORE_PRUNE,
    &STORE_ASSUME,
    &ARTIFACTS,
    &ARTIFACTS_READ,
    &STACK_READ,
    &STACK_WRITE,
    &STACK_DELETE,
    &FUNCTION_READ,
    &FUNCTION_LIST,
    &FUNCTION_INVOKE,
    &FUNCTION_PUBLISH,
    &FUNCTION_CODE,
    &FUNCTION_URL,
    &FUNCTION_DELETE_VERSION,
    &FUNCTION_THROTTLE,
    &SECRETS_READ,
    &SECRETS_DESCRIBE,
    &SECRETS_CREATE,
    &SECRETS_ROTATE,
    &TOKEN_READ,
    &LOGS,
    &LOGS_READ,
    &DNS_READ,
    &DNS_WRITE,
    &DOOR_READ,
    &DOOR_WRITE,
    &DOOR_DELETE,
    &PIPELINE_RUN,
    &CI_INSTALL,
    &ALARMS_READ,
    &ALERTS,
    &FUNCTION_OWN_SECRET,
    &REHEARSAL,
];

/// The actions of some capabilities, as one set.
pub fn actions(caps: &[&Cap]) -> std::collections::BTreeSet<String> {
    caps.iter()
        .flat_map(|c| c.grants.iter())
        .flat_map(|g| g.actions.iter().map(|a| a.to_string()))
        .collect()
}
