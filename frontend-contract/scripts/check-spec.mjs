// The contract rules of the issue that Redocly's rule set does not check, on ../openapi/openapi.json:
// every operation has an operationId, a summary and tags; JSON request bodies and success
// responses are `$ref`s to named schemas that carry an example; every 4xx/5xx response is
// `application/problem+json` with the Problem schema; authenticated operations declare their
// security and a 401; no schema nests an anonymous object where a named one belongs; the
// closed sets below are enums; the headers the server sends are declared; the event stream
// names its events.
import { readFileSync } from "node:fs";

const spec = JSON.parse(readFileSync(new URL("../../openapi/openapi.json", import.meta.url), "utf8"));
const problems = [];
const methods = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
const ids = new Set();
const schemas = spec.components?.schemas ?? {};

/** The object a `$ref` (of any component kind) points to, followed until it is not a `$ref`. */
function resolve(node) {
  let n = node;
  for (let hops = 0; n?.$ref && hops < 10; hops++) {
    const [, kind, name] = n.$ref.match(/^#\/components\/([^/]+)\/(.+)$/) ?? [];
    n = spec.components?.[kind]?.[name];
    if (!n) problems.push(`unresolvable $ref ${node.$ref}`);
  }
  return n ?? {};
}

const refName = (schema) => schema?.$ref?.match(/^#\/components\/schemas\/(.+)$/)?.[1];
/** The named schema of a `$ref`, or of a nullable one (`oneOf: [$ref, {type: null}]`). */
const namedOrNullable = (schema) =>
  refName(schema) ??
  (schema?.oneOf?.length === 2 && schema.oneOf.some((s) => s.type === "null") ? refName(schema.oneOf.find((s) => s.$ref)) : undefined);
const isJson = (type) => type === "application/json" || type.endsWith("+json");
/** An object schema spelled out in place: it has properties of its own. */
const anonymousObject = (schema) => schema && !schema.$ref && schema.properties !== undefined;
const hasExample = (schema) => schema.example !== undefined || (schema.examples?.length ?? 0) > 0;

/** A JSON body's schema must be a named component (nullable for an optional body) with an example. */
function checkBody(at, what, schema) {
  const name = namedOrNullable(schema);
  if (!name) {
    if (anonymousObject(schema)) problems.push(`${at}: ${what} is an inline object schema, not a named one`);
    else if (schema?.type !== "string" && schema?.type !== "object") problems.push(`${at}: ${what} is not a $ref to a named schema`);
    return;
  }
  if (!hasExample(schemas[name] ?? {})) problems.push(`${at}: ${what} schema ${name} has no example`);
}

// Closed sets: these properties (and the list filter) must be enums, directly or by $ref.
const ENUMS = {
  GenerationView: ["status", "provider"],
  GenerationRequest: ["quality", "background", "output_format", "moderation"],
  ImageView: ["format"],
  WebhookDeliveryView: ["status"],
  GenerationStatusData: ["status"],
  ReferenceImageView: ["content_type"],
  RegisterRequest: ["client"],
  LoginRequest: ["client"],
  SessionView: ["client", "auth_method"],
  ActivityView: ["kind"],
  IdentityView: ["provider"],
  ExportView: ["status"],
  GrantView: ["source"],
  LedgerEntryView: ["kind"],
  TransactionView: ["kind", "provider"],
  SubscriptionView: ["provider"],
  CheckoutBody: ["provider"],
  PortalBody: ["provider"],
  AuthResponse: ["token_type"],
  DeletionScheduled: ["status"],
  Health: ["status"],
};
/** The enum values of a schema, through `$ref`s and nullable `oneOf`s. */
function enumOf(schema) {
  const s = resolve(schema);
  if (Array.isArray(s.enum)) return s.enum;
  for (const alt of s.oneOf ?? s.anyOf ?? []) {
    const values = enumOf(alt);
    if (values) return values;
  }
  return undefined;
}
for (const [name, props] of Object.entries(ENUMS)) {
  const schema = schemas[name];
  if (!schema) {
    problems.push(`schema ${name} is missing`);
    continue;
  }
  for (const prop of props) {
    if (!enumOf(schema.properties?.[prop] ?? {})) problems.push(`${name}.${prop} is not an enum`);
  }
}

// No component nests an anonymous object in a property (directly, as array items, or as an
// alternative): name it. An `allOf` part at the top (a flattened struct) is fine.
for (const [name, schema] of Object.entries(schemas)) {
  const parts = [schema, ...(schema.allOf ?? []), ...(schema.oneOf ?? [])];
  for (const part of parts) {
    for (const [prop, raw] of Object.entries(part.properties ?? {})) {
      for (const s of [raw, raw.items, ...(raw.oneOf ?? []), ...(raw.anyOf ?? [])]) {
        if (anonymousObject(s)) problems.push(`${name}.${prop} is an inline object schema; give it a name`);
      }
    }
  }
}

// Operations that answer 201/202 with a `Location` (the code sets it) must declare it.
const LOCATION = new Set(["createGeneration", "createExport", "uploadReferenceImage"]);

for (const [path, item] of Object.entries(spec.paths ?? {})) {
  for (const method of methods) {
    const op = item[method];
    if (!op) continue;
    const at = `${method.toUpperCase()} ${path}`;
    if (!op.operationId) problems.push(`${at}: no operationId`);
    else if (ids.has(op.operationId)) problems.push(`${at}: duplicate operationId ${op.operationId}`);
    else ids.add(op.operationId);
    if (!op.summary) problems.push(`${at}: no summary`);
    if (!op.tags?.length) problems.push(`${at}: no tags`);
    for (const [type, media] of Object.entries(op.requestBody?.content ?? {})) {
      if (!media.schema) problems.push(`${at}: request body ${type} has no schema`);
      else if (isJson(type)) checkBody(at, `request body ${type}`, media.schema);
    }
    const codes = Object.keys(op.responses ?? {});
    if (!codes.some((c) => /^[23]/.test(c))) problems.push(`${at}: neither a 2xx nor a redirect answer`);
    const idempotent = (op.parameters ?? []).some((p) => p.$ref === "#/components/parameters/IdempotencyKey");
    for (const [status, raw] of Object.entries(op.responses ?? {})) {
      const resp = resolve(raw);
      const content = resp.content ?? {};
      const headers = Object.fromEntries(Object.entries(resp.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
      if (!headers["x-request-id"]) problems.push(`${at}: ${status} does not declare X-Request-Id`);
      if (status === "429" && !headers["retry-after"]) problems.push(`${at}: 429 does not declare Retry-After`);
      // A 431 comes from the header limit, outside the idempotency layer: never a replay.
      if (idempotent && Number(status) < 500 && status !== "431" && !headers["idempotent-replayed"])
        problems.push(`${at}: ${status} does not declare Idempotent-Replayed (the operation takes an Idempotency-Key)`);
      if (/^3/.test(status) && !headers.location) problems.push(`${at}: ${status} does not declare Location`);
      if (LOCATION.has(op.operationId) && /^20[12]$/.test(status) && !headers.location)
        problems.push(`${at}: ${status} does not declare the Location it sends`);
      if (/^[45]/.test(status)) {
        const media = content["application/problem+json"];
        if (!media) problems.push(`${at}: ${status} is not application/problem+json`);
        else if (media.schema?.$ref !== "#/components/schemas/Problem")
          problems.push(`${at}: ${status} does not use the Problem schema`);
        if (Object.keys(content).length > 1) problems.push(`${at}: ${status} declares more than problem+json`);
      } else if (/^2/.test(status) && status !== "204") {
        for (const [type, media] of Object.entries(content)) {
          if (!media.schema) problems.push(`${at}: ${status} ${type} has no schema`);
          else if (isJson(type)) checkBody(at, `${status} ${type}`, media.schema);
          else if (type === "text/event-stream") checkEventStream(at, media.schema);
        }
      }
    }
    const secured = (op.security ?? spec.security ?? []).some((req) => Object.keys(req).length > 0);
    const optional = (op.security ?? []).some((req) => Object.keys(req).length === 0);
    if (secured && !optional && !op.responses?.["401"]) problems.push(`${at}: secured but no 401 response`);
  }
}

/** An event stream's schema: a named `oneOf` of `{event: <one name>, data: <JSON text whose
 * contentSchema is a named schema>}` (SSE `data:` lines are text). */
function checkEventStream(at, schema) {
  const name = refName(schema);
  const events = resolve(schema).oneOf;
  if (!name || !events?.length) {
    problems.push(`${at}: text/event-stream is not a named oneOf of events`);
    return;
  }
  if (!hasExample(resolve(schema))) problems.push(`${at}: event schema ${name} has no example`);
  for (const event of events) {
    const names = event.properties?.event?.enum;
    if (names?.length !== 1) problems.push(`${at}: an event of ${name} does not name itself`);
    const data = event.properties?.data;
    if (data?.type !== "string" || data?.contentMediaType !== "application/json" || !refName(data?.contentSchema))
      problems.push(`${at}: event ${names?.[0]} of ${name} is not JSON text with a named contentSchema`);
  }
}

const filter = spec.paths?.["/v1/generations"]?.get?.parameters?.find((p) => p.name === "status");
if (!filter || !enumOf(filter.schema ?? {})) problems.push("GET /v1/generations: the `status` filter is not an enum");

if (problems.length) {
  console.error(`openapi.json breaks ${problems.length} contract rule(s):\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`openapi.json: ${ids.size} operations meet the contract rules`);
