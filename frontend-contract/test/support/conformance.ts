// Checks every answer against ../openapi/openapi.json: the status is declared for the operation,
// the headers it declares required are there, the content type is a declared one, and a JSON
// body matches the declared schema (types, required properties, enums, nullability). A spec
// that lies fails the call that met the lie.
import { readFileSync } from "node:fs";
import type { Middleware } from "openapi-fetch";

type Schema = Record<string, unknown>;
interface Declared {
  headers?: Record<string, Schema>;
  content?: Record<string, { schema?: Schema }>;
}
export const spec = JSON.parse(readFileSync(new URL("../../../openapi/openapi.json", import.meta.url), "utf8")) as {
  paths: Record<string, Record<string, { responses: Record<string, Declared> }>>;
  components: Record<string, Record<string, Schema>>;
};

/** Follows `$ref`s to any component (schemas, responses, headers); siblings of a `$ref` win. */
function resolveRef<T extends object = Schema>(node: T): T {
  let s = node as Schema;
  while (typeof s.$ref === "string") {
    const [, kind = "", name = ""] = /^#\/components\/([^/]+)\/(.+)$/.exec(s.$ref) ?? [];
    const target = spec.components[kind]?.[name];
    if (!target) throw new Error(`unresolvable $ref ${s.$ref}`);
    s = { ...target, ...Object.fromEntries(Object.entries(s).filter(([k]) => k !== "$ref")) };
  }
  return s as T;
}

function typeOf(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

/** Mismatches of `value` against `schema` (a pragmatic subset of JSON Schema 2020-12). */
export function validate(value: unknown, raw: Schema, at = "$"): string[] {
  const schema = resolveRef(raw);
  const alternatives = (schema.oneOf ?? schema.anyOf) as Schema[] | undefined;
  if (alternatives) {
    const results = alternatives.map((alt) => validate(value, alt, at));
    if (results.some((r) => r.length === 0)) return [];
    return [`${at}: matches none of the alternatives (${results.map((r) => r[0]).join(" | ")})`];
  }
  if (schema.allOf) return (schema.allOf as Schema[]).flatMap((s) => validate(value, s, at));
  const types = schema.type === undefined ? undefined : ([] as string[]).concat(schema.type as string | string[]);
  const actual = typeOf(value);
  if (types && !types.includes(actual) && !(actual === "integer" && types.includes("number"))) {
    return [`${at}: is ${actual}, spec says ${types.join("|")}`];
  }
  if (Array.isArray(schema.enum) && !schema.enum.includes(value)) return [`${at}: ${JSON.stringify(value)} not in enum`];
  const errors: string[] = [];
  if (actual === "object") {
    const obj = value as Record<string, unknown>;
    for (const key of (schema.required as string[] | undefined) ?? []) {
      if (!(key in obj)) errors.push(`${at}.${key}: required but missing`);
    }
    const props = (schema.properties as Record<string, Schema> | undefined) ?? {};
    for (const [key, v] of Object.entries(obj)) {
      if (props[key]) errors.push(...validate(v, props[key], `${at}.${key}`));
      else if (schema.additionalProperties === false) errors.push(`${at}.${key}: not in the spec`);
    }
  }
  if (actual === "array" && schema.items) {
    (value as unknown[]).forEach((item, i) => errors.push(...validate(item, schema.items as Schema, `${at}[${i}]`)));
  }
  return errors;
}

/** Answers checked so far (the flows assert that the check really ran). */
export const checked = { responses: 0, bodies: 0 };

export const conformance: Middleware = {
  async onResponse({ request, response, schemaPath }) {
    checked.responses += 1;
    const op = spec.paths[schemaPath]?.[request.method.toLowerCase()];
    const where = `${request.method} ${schemaPath} → ${response.status}`;
    if (!op) throw new Error(`${where}: operation not in openapi.json`);
    const raw = op.responses[String(response.status)] ?? op.responses[`${String(response.status)[0]}XX`] ?? op.responses.default;
    if (!raw) throw new Error(`${where}: status not declared (declared: ${Object.keys(op.responses).join(", ")})`);
    const declared = resolveRef(raw);
    for (const [name, header] of Object.entries(declared.headers ?? {})) {
      if (resolveRef(header).required === true && !response.headers.has(name)) {
        throw new Error(`${where}: required header ${name} missing`);
      }
    }
    const contentType = (response.headers.get("content-type") ?? "").split(";")[0]!.trim();
    const media = declared.content ?? {};
    if (Object.keys(media).length === 0) {
      return undefined; // no body declared (204, 302): nothing more to check
    }
    if (response.status === 304 || (contentType === "" && response.headers.get("content-length") === "0")) {
      throw new Error(`${where}: empty body, spec declares ${Object.keys(media).join(", ")}`);
    }
    // `GET /files/{key}` declares `application/octet-stream` but serves each object with its
    // stored type (image/png, application/zip, …), as its description says: accept any
    // non-JSON type there. (Better in the spec: list the types, or `*/*`.)
    const binary = media["application/octet-stream"] && !contentType.endsWith("json") ? media["application/octet-stream"] : undefined;
    const entry = media[contentType] ?? media["*/*"] ?? binary;
    if (!entry) throw new Error(`${where}: content type ${contentType || "(none)"} not declared (${Object.keys(media).join(", ")})`);
    if (contentType.endsWith("json") && entry.schema) {
      checked.bodies += 1;
      const body = (await response.clone().json()) as unknown;
      const errors = validate(body, entry.schema);
      if (errors.length) throw new Error(`${where}: body does not match the spec:\n  ${errors.slice(0, 10).join("\n  ")}`);
    }
    return undefined;
  },
};
