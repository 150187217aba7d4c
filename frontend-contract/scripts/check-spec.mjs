// The contract rules of the issue that Redocly's rule set does not check, on ../openapi/openapi.json:
// every operation has an operationId, a summary and tags; JSON request bodies and success
// responses have a schema; every 4xx/5xx response is `application/problem+json` with the
// Problem schema; authenticated operations declare their security and a 401.
import { readFileSync } from "node:fs";

const spec = JSON.parse(readFileSync(new URL("../../openapi/openapi.json", import.meta.url), "utf8"));
const problems = [];
const methods = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];
const ids = new Set();

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
    }
    for (const [status, resp] of Object.entries(op.responses ?? {})) {
      const content = resp.content ?? {};
      if (/^[45]/.test(status)) {
        const media = content["application/problem+json"];
        if (!media) problems.push(`${at}: ${status} is not application/problem+json`);
        else if (media.schema?.$ref !== "#/components/schemas/Problem")
          problems.push(`${at}: ${status} does not use the Problem schema`);
      } else if (/^2/.test(status) && status !== "204" && status !== "202") {
        for (const [type, media] of Object.entries(content)) {
          if (!media.schema) problems.push(`${at}: ${status} ${type} has no schema`);
        }
      }
    }
    const secured = (op.security ?? spec.security ?? []).some((req) => Object.keys(req).length > 0);
    const optional = (op.security ?? []).some((req) => Object.keys(req).length === 0);
    if (secured && !optional && !op.responses?.["401"]) problems.push(`${at}: secured but no 401 response`);
  }
}

if (problems.length) {
  console.error(`openapi.json breaks ${problems.length} contract rule(s):\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`openapi.json: ${ids.size} operations meet the contract rules`);
