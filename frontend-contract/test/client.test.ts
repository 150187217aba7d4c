// The client's own machinery, without a server: refresh once on 401 and resend, share one
// refresh between concurrent calls, leave the 401 when the refresh fails, typed problems, and
// the conformance check that makes a lying spec fail.
import { describe, expect, test } from "vitest";
import { ApiProblem, createApiClient, problemOf, unwrap } from "../src/client";
import { conformance, validate } from "./support/conformance";

const BASE = "http://api.test";
const user = {
  id: "0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f",
  email: "ada@example.com",
  email_verified: true,
  name: "Ada",
  has_password: true,
  low_balance_emails: true,
  created_at: "2026-11-29T00:00:00Z",
  credits: { balance: 0, available: 0 },
};
const json = (status: number, body: unknown, type = "application/json") =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": type, "x-request-id": "fake-request" } });
const problem = (status: number, code: string) =>
  json(status, { type: `https://docs.gptimage2.dev/problems/${code}`, title: code, status, detail: code, code }, "application/problem+json");

/** A fake server: /v1/auth/refresh hands out token `t<n>`; /v1/me accepts only the newest. */
function fakeServer(refreshWorks = true) {
  const calls: string[] = [];
  let issued = 0;
  const fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
    const request = new Request(input, init);
    const path = new URL(request.url).pathname;
    calls.push(`${request.method} ${path} ${request.headers.get("authorization") ?? "-"}`);
    if (path === "/v1/auth/refresh") {
      await new Promise((ok) => setTimeout(ok, 10));
      if (!refreshWorks) return problem(401, "invalid_refresh_token");
      issued += 1;
      const body = (await request.text()) || "null";
      return json(200, { user, access_token: `t${issued}`, token_type: "Bearer", expires_in: 900, refresh_token: JSON.parse(body)?.refresh_token ? `r${issued}` : null });
    }
    if (path === "/v1/me") {
      if (request.method === "PATCH") {
        const body = (await request.json()) as { name: string };
        if (request.headers.get("authorization") !== `Bearer t${issued}`) return problem(401, "unauthorized");
        return json(200, { ...user, name: body.name });
      }
      if (request.headers.get("authorization") !== `Bearer t${issued}`) return problem(401, "unauthorized");
      return json(200, user);
    }
    return problem(404, "not_found");
  };
  return { fetch, calls };
}

describe("createApiClient", () => {
  test("a 401 refreshes once and resends the request, body included (mobile mode)", async () => {
    const server = fakeServer();
    const seen: string[] = [];
    const api = createApiClient({ baseUrl: BASE, mode: "mobile", refreshToken: "r0", fetch: server.fetch, onTokens: (t) => seen.push(t.refresh_token ?? "") });
    const me = await unwrap(api.client.PATCH("/v1/me", { body: { name: "Ada King" } }));
    expect(me.name).toBe("Ada King");
    expect(server.calls).toEqual(["PATCH /v1/me -", "POST /v1/auth/refresh -", "PATCH /v1/me Bearer t1"]);
    expect(api.refreshToken()).toBe("r1");
    expect(seen).toEqual(["r1"]);
  });

  test("concurrent 401s share one refresh", async () => {
    const server = fakeServer();
    const api = createApiClient({ baseUrl: BASE, mode: "cookie", fetch: server.fetch });
    await Promise.all([unwrap(api.client.GET("/v1/me")), unwrap(api.client.GET("/v1/me")), unwrap(api.client.GET("/v1/me"))]);
    expect(server.calls.filter((c) => c.includes("/v1/auth/refresh"))).toHaveLength(1);
  });

  test("a failed refresh leaves the 401 as a typed problem and reports the sign-out", async () => {
    const server = fakeServer(false);
    const signedOut: ApiProblem[] = [];
    const api = createApiClient({ baseUrl: BASE, mode: "cookie", fetch: server.fetch, onSignedOut: (p) => signedOut.push(p) });
    const error = await problemOf(api.client.GET("/v1/me"));
    expect(error).toBeInstanceOf(ApiProblem);
    expect([error.status, error.code]).toEqual([401, "unauthorized"]);
    expect(signedOut.map((p) => p.code)).toEqual(["invalid_refresh_token"]);
    expect(server.calls).toHaveLength(2); // no loop
  });

  test("an answer that is not problem+json becomes unexpected_response", async () => {
    const api = createApiClient({
      baseUrl: BASE,
      mode: "apiKey",
      apiKey: "gi2_x",
      fetch: async () => new Response("<html>Bad gateway</html>", { status: 502, headers: { "content-type": "text/html" } }),
    });
    const error = await problemOf(api.client.GET("/v1/credits"));
    expect([error.status, error.code]).toEqual([502, "unexpected_response"]);
  });
});

describe("conformance", () => {
  test("accepts what the spec says and rejects what it does not", () => {
    const ref = { $ref: "#/components/schemas/UserView" };
    expect(validate(user, ref)).toEqual([]);
    expect(validate({ ...user, email_verified: "yes" }, ref)).toEqual(["$.email_verified: is string, spec says boolean"]);
    const { name: _name, ...nameless } = user;
    expect(validate(nameless, ref)).toEqual(["$.name: required but missing"]);
  });

  test("an undeclared status, a missing required header or an undeclared content type fails the call", async () => {
    const lie = createApiClient({
      baseUrl: BASE,
      mode: "apiKey",
      apiKey: "gi2_x",
      middleware: [conformance],
      fetch: async () => json(418, { teapot: true }),
    });
    await expect(lie.client.GET("/v1/credits")).rejects.toThrow(/status not declared/);
    const wrongType = createApiClient({
      baseUrl: BASE,
      mode: "apiKey",
      apiKey: "gi2_x",
      middleware: [conformance],
      fetch: async () => json(401, { code: "unauthorized" }),
    });
    await expect(wrongType.client.GET("/v1/credits")).rejects.toThrow(/content type application\/json not declared/);
    const anonymous = createApiClient({
      baseUrl: BASE,
      mode: "apiKey",
      apiKey: "gi2_x",
      middleware: [conformance],
      fetch: async () => new Response(JSON.stringify({ balance: 0, held: 0, available: 0, grants: [] }), { headers: { "content-type": "application/json" } }),
    });
    await expect(anonymous.client.GET("/v1/credits")).rejects.toThrow(/required header X-Request-Id missing/);
  });
});
