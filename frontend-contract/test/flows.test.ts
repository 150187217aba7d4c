// The SPA's story against the live server, through the typed client only: every call is checked
// against openapi.json at compile time (tsc) and at run time (the conformance middleware).
import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { ApiProblem, createApiClient, problemOf, unwrap, type ApiClient, type Schemas } from "../src/client";
import { checked, conformance, spec, validate } from "./support/conformance";
import { PNG_SIGNATURE, makePng } from "./support/png";
import { LiveServer, browserFetch } from "./support/server";

let server: LiveServer;

beforeAll(async () => {
  server = await LiveServer.start();
});

afterAll(async () => {
  await server?.stop();
});

/** A browser tab of the SPA: cookie mode, the page's origin is the server's public URL. */
function spa(): ApiClient & { fetch: ReturnType<typeof browserFetch> } {
  const fetch = browserFetch(server.baseUrl);
  return Object.assign(
    createApiClient({ baseUrl: server.baseUrl, mode: "cookie", fetch, middleware: [conformance] }),
    { fetch },
  );
}

function mobile(refreshToken?: string): ApiClient {
  return createApiClient({ baseUrl: server.baseUrl, mode: "mobile", refreshToken, middleware: [conformance] });
}

/** Reads a `text/event-stream` body into its events until the stream ends. */
async function readEvents(stream: ReadableStream<Uint8Array>): Promise<Array<{ event: string; data: string }>> {
  const events: Array<{ event: string; data: string }> = [];
  const decoder = new TextDecoder();
  let buffer = "";
  const reader = stream.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data: string[] = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue; // keep-alive comment
        if (line.startsWith("event:")) event = line.slice(6).trim();
        if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) events.push({ event, data: data.join("\n") });
    }
    if (done) return events;
  }
}

const email = `ada+${randomUUID().slice(0, 8)}@example.com`;
const password = "correct horse battery staple";
const tab = { current: undefined as unknown as ReturnType<typeof spa> };

describe("the SPA story", () => {
  test("public pages: readiness, pricing, catalog, privacy policy", async () => {
    const api = spa();
    const ready = await unwrap(api.client.GET("/readyz"));
    expect(ready.status).toBe("ok");
    const pricing = await unwrap(api.client.GET("/v1/pricing"));
    expect(pricing).toBeTruthy();
    await unwrap(api.client.GET("/v1/billing/catalog"));
    const policy = await unwrap(api.client.GET("/v1/legal/privacy-policy"));
    expect(policy.version).toBeTruthy();
  });

  test("register: signed in at once, refresh cookie set, errors are typed problems", async () => {
    const api = spa();
    const invalid = await problemOf(
      api.client.POST("/v1/auth/register", { body: { email: "not-an-email", password: "short", name: "" } }),
    );
    expect(invalid).toBeInstanceOf(ApiProblem);
    expect(invalid.status).toBe(422);
    expect(invalid.code).toBe("validation_failed");
    expect(invalid.errors?.map((e) => e.field)).toEqual(expect.arrayContaining(["email", "password"]));

    const auth = await unwrap(api.client.POST("/v1/auth/register", { body: { email, password, name: "Ada Lovelace" } }));
    expect(auth.user.email).toBe(email);
    expect(auth.user.email_verified).toBe(false);
    expect(auth.refresh_token ?? null).toBeNull(); // browsers get the cookie instead
    expect(api.accessToken()).toBe(auth.access_token);
    expect(api.fetch.cookies.get("gi2_refresh")?.path).toBe("/v1/auth");

    const taken = await problemOf(api.client.POST("/v1/auth/register", { body: { email, password, name: "Ada" } }));
    expect([taken.status, taken.code]).toEqual([409, "email_taken"]);
    expect(taken.request_id).toBe(taken.response.headers.get("x-request-id"));
  });

  test("verify the email with the token from the mail", async () => {
    const api = spa();
    const mail = await server.mail.waitFor(email, /verify-email\?token=/);
    const token = /verify-email\?token=([A-Za-z0-9_\-.~%]+)/.exec(mail.text)?.[1];
    expect(token).toBeTruthy();
    await unwrap(api.client.POST("/v1/auth/verify-email", { body: { token: decodeURIComponent(token!) } }));
    const again = await problemOf(api.client.POST("/v1/auth/verify-email", { body: { token: decodeURIComponent(token!) } }));
    expect([again.status, again.code]).toEqual([400, "invalid_token"]);
  });

  test("sign in (cookie mode); wrong password is invalid_credentials", async () => {
    const api = spa();
    const wrong = await problemOf(api.client.POST("/v1/auth/login", { body: { email, password: "wrong password!" } }));
    expect([wrong.status, wrong.code]).toEqual([401, "invalid_credentials"]);
    const auth = await unwrap(api.client.POST("/v1/auth/login", { body: { email, password } }));
    expect(auth.token_type).toBe("Bearer");
    const me = await unwrap(api.client.GET("/v1/me"));
    expect(me.email_verified).toBe(true);
    tab.current = api;
  });

  test("refresh: explicit, and once on a 401 with the request resent", async () => {
    const api = tab.current;
    const before = api.accessToken();
    const refreshed = await api.refresh();
    expect(refreshed.access_token).not.toBe(before);
    // The access token "expires": the next call gets a 401, refreshes once and is resent.
    api.setTokens({ ...refreshed, access_token: "expired.or.garbage" });
    const me = await unwrap(api.client.PATCH("/v1/me", { body: { name: "Ada King" } }));
    expect(me.name).toBe("Ada King");
    expect(api.accessToken()).not.toBe("expired.or.garbage");

    // Without an allowed Origin the cookie is refused (CSRF protection).
    const foreign = createApiClient({
      baseUrl: server.baseUrl,
      mode: "cookie",
      middleware: [conformance],
      fetch: (input, init) => {
        const request = new Request(input, init);
        const cookie = api.fetch.cookies.get("gi2_refresh");
        request.headers.set("Cookie", `gi2_refresh=${cookie?.value}`);
        request.headers.set("Origin", "https://evil.example");
        return fetch(request);
      },
    });
    const refused = await problemOf(foreign.client.POST("/v1/auth/refresh"));
    expect(refused.status).toBe(403);
  });

  test("mobile mode: refresh token in the body, rotated, reuse ends the session", async () => {
    const api = mobile();
    const auth = await unwrap(api.client.POST("/v1/auth/login", { body: { email, password, client: "mobile" } }));
    const first = auth.refresh_token;
    expect(first).toBeTruthy();
    const second = await api.refresh();
    expect(second.refresh_token).toBeTruthy();
    expect(second.refresh_token).not.toBe(first);

    const stolen = mobile(first!);
    const reused = await problemOf(stolen.client.POST("/v1/auth/refresh", { body: { refresh_token: first! } }));
    expect(reused.status).toBe(401);
    expect(reused.code).toBe("refresh_token_reused");
    // The whole family is gone: the rotated token no longer works either.
    await expect(api.refresh()).rejects.toBeInstanceOf(ApiProblem);
  });

  test("credits: none at first (402), then granted by an admin", async () => {
    const api = tab.current;
    const empty = await unwrap(api.client.GET("/v1/credits"));
    expect(empty.available).toBe(0);
    const poor = await problemOf(
      api.client.POST("/v1/generations", { body: { prompt: "a fox", size: "1024x1024", quality: "low" } }),
    );
    expect([poor.status, poor.code]).toEqual([402, "insufficient_credits"]);

    server.grantCredits(email, 500);
    const credits = await unwrap(api.client.GET("/v1/credits"));
    expect(credits).toMatchObject({ balance: 500, held: 0, available: 500 });
    expect(credits.grants[0]?.source).toBe("admin");
  });

  let reference: Schemas["ReferenceImageView"];
  let generation: Schemas["GenerationView"];

  test("upload a reference image (multipart)", async () => {
    const api = tab.current;
    const png = makePng(64, 48);
    reference = await unwrap(
      api.client.POST("/v1/reference-images", {
        // The schema types the binary part as a string; the body serializer sends the Blob.
        body: { file: new Blob([new Uint8Array(png)], { type: "image/png" }) as unknown as string },
        bodySerializer: (body) => {
          const form = new FormData();
          form.append("file", body.file as unknown as Blob, "fox.png");
          return form;
        },
      }),
    );
    expect(reference).toMatchObject({ width: 64, height: 48, content_type: "image/png" });
    const again = await unwrap(api.client.GET("/v1/reference-images/{id}", { params: { path: { id: reference.id } } }));
    expect(again.id).toBe(reference.id);

    const notImage = await problemOf(
      api.client.POST("/v1/reference-images", {
        body: { file: new Blob(["hello"], { type: "image/png" }) as unknown as string },
        bodySerializer: (body) => {
          const form = new FormData();
          form.append("file", body.file as unknown as Blob, "fake.png");
          return form;
        },
      }),
    );
    expect(notImage.status).toBe(415);
  });

  test("generate with the built-in renderer (idempotent submit) and follow the SSE stream", async () => {
    const api = tab.current;
    const key = randomUUID();
    const body: Schemas["GenerationRequest"] = { prompt: "A watercolor fox reading a map at dawn", size: "1024x1024", quality: "low", reference_image_ids: [reference.id] };
    const submitted = await api.client.POST("/v1/generations", { body, params: { header: { "Idempotency-Key": key } } });
    generation = await unwrap(Promise.resolve(submitted));
    expect(submitted.response.status).toBe(202);
    expect(generation.status).toBe("queued");
    expect(generation.cost_credits).toBeGreaterThan(0);

    const replay = await api.client.POST("/v1/generations", { body, params: { header: { "Idempotency-Key": key } } });
    expect((await unwrap(Promise.resolve(replay))).id).toBe(generation.id);
    expect(replay.response.headers.get("idempotent-replayed")).toBe("true");
    const reused = await problemOf(
      api.client.POST("/v1/generations", { body: { ...body, prompt: "another" }, params: { header: { "Idempotency-Key": key } } }),
    );
    expect([reused.status, reused.code]).toEqual([422, "idempotency_key_reused"]);

    const stream = await unwrap(
      api.client.GET("/v1/generations/{id}/events", { params: { path: { id: generation.id } }, parseAs: "stream" }),
    );
    expect(stream).toBeTruthy();
    // Each event is what the spec's GenerationEvent says: its name, its data as JSON text, and
    // that text's contentSchema.
    const raw = await readEvents(stream!);
    type Variant = { properties: { event: { enum: string[] }; data: { contentSchema: Parameters<typeof validate>[1] } } };
    const variants = (spec.components.schemas?.GenerationEvent as unknown as { oneOf: Variant[] }).oneOf;
    for (const e of raw) {
      expect(validate(e, { $ref: "#/components/schemas/GenerationEvent" }), e.event).toEqual([]);
      const variant = variants.find((v) => v.properties.event.enum[0] === e.event);
      expect(variant, e.event).toBeTruthy();
      expect(validate(JSON.parse(e.data), variant!.properties.data.contentSchema), e.event).toEqual([]);
    }
    const events = raw.map(({ event, data }) => ({ event, data: JSON.parse(data) as Record<string, unknown> }));
    const last = events.at(-1);
    expect(last?.event, JSON.stringify(events)).toBe("completed");
    if (last?.event !== "completed") throw new Error("unreachable");
    const done = last.data as Schemas["GenerationView"];
    expect(done.id).toBe(generation.id);
    expect(done.status).toBe("succeeded");
    expect(done.provider).toBe("builtin");
    expect(done.images).toHaveLength(1);
    for (const e of events) {
      if (e.event === "status") expect(["queued", "running", "succeeded"]).toContain(e.data.status);
    }

    generation = await unwrap(api.client.GET("/v1/generations/{id}", { params: { path: { id: generation.id } } }));
    expect(generation.status).toBe("succeeded");
    const credits = await unwrap(api.client.GET("/v1/credits"));
    expect(credits).toMatchObject({ held: 0, available: 500 - generation.cost_credits });
  });

  test("download the image: 302 to a signed link, then the bytes", async () => {
    const api = tab.current;
    const image = generation.images[0]!;
    const redirect = await api.client.GET("/v1/images/{id}/content", {
      params: { path: { id: image.id } },
      redirect: "manual",
    });
    expect(redirect.response.status).toBe(302);
    const location = new URL(redirect.response.headers.get("location")!, server.baseUrl);
    expect(location.origin).toBe(server.baseUrl);
    const key = decodeURIComponent(location.pathname.replace(/^\/files\//, ""));
    const bytes = await unwrap(
      api.client.GET("/files/{key}", {
        params: {
          path: { key },
          query: { expires: Number(location.searchParams.get("expires")), signature: location.searchParams.get("signature")! },
        },
        // Object keys contain slashes, which are part of the path, not data to escape.
        pathSerializer: (path, params) => path.replace("{key}", String(params.key).split("/").map(encodeURIComponent).join("/")),
        parseAs: "arrayBuffer",
      }),
    );
    const buffer = Buffer.from(bytes);
    expect(buffer.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
    expect(buffer.length).toBe(image.bytes);

    const forged = await problemOf(
      api.client.GET("/files/{key}", {
        params: { path: { key }, query: { expires: Number(location.searchParams.get("expires")), signature: "00".repeat(32) } },
        pathSerializer: (path, params) => path.replace("{key}", String(params.key).split("/").map(encodeURIComponent).join("/")),
      }),
    );
    expect(forged.status).toBe(403);
  });

  test("webhooks: a signed POST when a generation finishes (Standard Webhooks)", async () => {
    const api = tab.current;
    const received: Array<{ headers: IncomingHttpHeaders; body: string }> = [];
    let arrived: () => void = () => {};
    const hook = createServer((req, res) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => (body += c));
      req.on("end", () => {
        received.push({ headers: req.headers, body });
        res.writeHead(204).end();
        arrived();
      });
    });
    await new Promise<void>((ok) => hook.listen(0, "127.0.0.1", ok));
    try {
      const url = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hooks`;
      const wait = new Promise<void>((ok) => (arrived = ok));
      const submitted = await unwrap(
        api.client.POST("/v1/generations", { body: { prompt: "a lighthouse", size: "1024x1024", quality: "low", webhook_url: url } }),
      );
      await Promise.race([wait, new Promise((_, fail) => setTimeout(() => fail(new Error("no webhook within 15 s")), 15_000))]);
      const delivery = received[0]!;

      // What an integrator does: verify webhook-signature with the secret from the API.
      const { secret } = await unwrap(api.client.GET("/v1/me/webhook-secret"));
      const id = String(delivery.headers["webhook-id"]);
      const timestamp = String(delivery.headers["webhook-timestamp"]);
      expect(Math.abs(Date.now() / 1000 - Number(timestamp))).toBeLessThan(300);
      const expected = createHmac("sha256", Buffer.from(secret.replace(/^whsec_/, ""), "base64"))
        .update(`${id}.${timestamp}.${delivery.body}`)
        .digest();
      const signatures = String(delivery.headers["webhook-signature"])
        .split(" ")
        .filter((s) => s.startsWith("v1,"))
        .map((s) => Buffer.from(s.slice(3), "base64"));
      expect(signatures.some((sig) => sig.length === expected.length && timingSafeEqual(sig, expected))).toBe(true);

      const event = JSON.parse(delivery.body) as { type: string; data: { id: string; status: string } };
      expect(event.type).toBe("generation.succeeded");
      expect(event.data).toMatchObject({ id: submitted.id, status: "succeeded" });
      // The delivery shows up on the generation once recorded.
      let deliveries: Schemas["WebhookDeliveryView"][] = [];
      for (let i = 0; i < 50 && deliveries.length === 0; i++) {
        if (i > 0) await new Promise((ok) => setTimeout(ok, 100));
        const g = await unwrap(api.client.GET("/v1/generations/{id}", { params: { path: { id: submitted.id } } }));
        deliveries = g.webhook_deliveries;
      }
      expect(deliveries.length).toBeGreaterThan(0);
    } finally {
      await new Promise<void>((ok) => hook.close(() => ok()));
    }
  });

  test("list and paginate (?limit&cursor → {data, next_cursor})", async () => {
    const api = tab.current;
    for (const prompt of ["a teapot"]) {
      await unwrap(api.client.POST("/v1/generations", { body: { prompt, size: "1024x1024", quality: "low" } }));
    }
    const seen: string[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 10; page++) {
      const result = await unwrap(api.client.GET("/v1/generations", { params: { query: { limit: 1, cursor } } }));
      expect(result.data.length).toBeLessThanOrEqual(1);
      seen.push(...result.data.map((g) => g.id));
      if (!result.next_cursor) break;
      cursor = result.next_cursor;
    }
    expect(seen).toHaveLength(3);
    expect(new Set(seen).size).toBe(3);
    expect(seen.at(-1)).toBe(generation.id); // newest first

    const bad = await problemOf(api.client.GET("/v1/generations", { params: { query: { limit: 1000 } } }));
    expect([bad.status, bad.code]).toEqual([422, "validation_failed"]);

    const refs = await unwrap(api.client.GET("/v1/reference-images", { params: { query: { limit: 10 } } }));
    expect(refs.data.map((r) => r.id)).toEqual([reference.id]);
    const ledger = await unwrap(api.client.GET("/v1/credits/ledger", { params: { query: { limit: 2 } } }));
    expect(ledger.data.length).toBeGreaterThan(0);
    const activity = await unwrap(api.client.GET("/v1/me/activity", { params: { query: { limit: 5 } } }));
    expect(activity.data.length).toBeGreaterThan(0);
  });

  test("account settings: consents and sessions", async () => {
    const api = tab.current;
    const initial = await unwrap(api.client.GET("/v1/me/consents"));
    expect(initial).toMatchObject({ analytics: false, marketing: false });
    const granted = await unwrap(api.client.PUT("/v1/me/consents", { body: { analytics: true, marketing: false } }));
    expect(granted.analytics).toBe(true);
    expect(granted.history.length).toBeGreaterThan(0);

    const sessions = await unwrap(api.client.GET("/v1/me/sessions"));
    const current = sessions.data.filter((s) => s.current);
    expect(current).toHaveLength(1);
    expect(current[0]?.client).toBe("web");
    // Verifying the address ended the register-time session; a second browser signs in, and
    // this one signs it out.
    const secondBrowser = spa();
    await unwrap(secondBrowser.client.POST("/v1/auth/login", { body: { email, password } }));
    const listed = await unwrap(api.client.GET("/v1/me/sessions"));
    const other = listed.data.find((s) => !s.current && s.client === "web");
    expect(other).toBeTruthy();
    await unwrap(api.client.DELETE("/v1/me/sessions/{id}", { params: { path: { id: other!.id } } }));
    const after = await unwrap(api.client.GET("/v1/me/sessions"));
    expect(after.data.map((s) => s.id)).not.toContain(other!.id);
  });

  test("write to support: stored, mailed to support and copied to the user", async () => {
    const api = tab.current;
    const subject = `A generation question ${randomUUID().slice(0, 8)}`;
    const sent = await unwrap(
      api.client.POST("/v1/support/requests", { body: { subject, message: "Which size is cheapest?\nThanks" } }),
    );
    expect(sent.subject).toBe(subject);
    const invalid = await problemOf(api.client.POST("/v1/support/requests", { body: { subject: "", message: "x" } }));
    expect([invalid.status, invalid.code]).toEqual([422, "validation_failed"]);
    await server.mail.waitFor("support@example.com", new RegExp(subject));
    await server.mail.waitFor(email, new RegExp(subject));
    const mine = await unwrap(api.client.GET("/v1/support/requests"));
    expect(mine.data.map((r) => r.id)).toContain(sent.id);
  });

  test("export my data: queued, then a ZIP to download", async () => {
    const api = tab.current;
    const created = await api.client.POST("/v1/me/exports");
    let exp = await unwrap(Promise.resolve(created));
    expect(created.response.status).toBe(202);
    for (let i = 0; i < 150 && !["succeeded", "failed"].includes(exp.status); i++) {
      await new Promise((ok) => setTimeout(ok, 100));
      exp = await unwrap(api.client.GET("/v1/me/exports/{id}", { params: { path: { id: exp.id } } }));
    }
    expect(exp.status, exp.error ?? "").toBe("succeeded");
    expect(exp.progress).toBe(100);
    const link = new URL(exp.download_url!, server.baseUrl);
    const key = decodeURIComponent(link.pathname.replace(/^\/files\//, ""));
    const zip = await unwrap(
      api.client.GET("/files/{key}", {
        params: { path: { key }, query: { expires: Number(link.searchParams.get("expires")), signature: link.searchParams.get("signature")! } },
        pathSerializer: (path, params) => path.replace("{key}", String(params.key).split("/").map(encodeURIComponent).join("/")),
        parseAs: "arrayBuffer",
      }),
    );
    expect(Buffer.from(zip).subarray(0, 4).toString("latin1")).toBe("PK\x03\x04");
    const list = await unwrap(api.client.GET("/v1/me/exports"));
    expect(list.data.map((e) => e.id)).toContain(exp.id);
  });

  test("API keys: created with a session, used as a bearer, limited to key routes", async () => {
    const api = tab.current;
    const created = await unwrap(api.client.POST("/v1/me/api-keys", { body: { name: "CI pipeline", daily_credit_limit: 100 } }));
    expect(created.key.startsWith("gi2_")).toBe(true);
    const integrator = createApiClient({ baseUrl: server.baseUrl, mode: "apiKey", apiKey: created.key, middleware: [conformance] });
    const credits = await unwrap(integrator.client.GET("/v1/credits"));
    expect(credits.balance).toBeGreaterThan(0);
    const secret = await unwrap(integrator.client.GET("/v1/me/webhook-secret"));
    expect(secret.secret.startsWith("whsec_")).toBe(true);
    const sessionOnly = await problemOf(integrator.client.GET("/v1/me/api-keys"));
    expect(sessionOnly.status).toBe(403);

    await unwrap(api.client.DELETE("/v1/me/api-keys/{id}", { params: { path: { id: created.id } } }));
    const revoked = await problemOf(integrator.client.GET("/v1/credits"));
    expect(revoked.status).toBe(401);
  });

  test("delete a generation and the reference image; another user's ids are 404", async () => {
    const api = tab.current;
    const other = mobile();
    await unwrap(
      other.client.POST("/v1/auth/register", {
        body: { email: `grace+${randomUUID().slice(0, 8)}@example.com`, password, name: "Grace Hopper", client: "mobile" },
      }),
    );
    const probe = await problemOf(other.client.GET("/v1/generations/{id}", { params: { path: { id: generation.id } } }));
    expect([probe.status, probe.code]).toEqual([404, "not_found"]);
    const probeRef = await problemOf(other.client.DELETE("/v1/reference-images/{id}", { params: { path: { id: reference.id } } }));
    expect(probeRef.status).toBe(404);

    await unwrap(api.client.DELETE("/v1/generations/{id}", { params: { path: { id: generation.id } } }));
    const gone = await problemOf(api.client.GET("/v1/generations/{id}", { params: { path: { id: generation.id } } }));
    expect([gone.status, gone.code]).toEqual([404, "not_found"]);
    await unwrap(api.client.DELETE("/v1/reference-images/{id}", { params: { path: { id: reference.id } } }));
    const refGone = await problemOf(api.client.GET("/v1/reference-images/{id}", { params: { path: { id: reference.id } } }));
    expect(refGone.status).toBe(404);
  });

  test("sign out: the session ends and refresh no longer works", async () => {
    const api = tab.current;
    await unwrap(api.client.POST("/v1/auth/logout"));
    expect(api.accessToken()).toBeUndefined();
    expect(api.fetch.cookies.has("gi2_refresh")).toBe(false);
    const after = await problemOf(api.client.GET("/v1/me"));
    expect(after.status).toBe(401);
  });

  test("delete the account: the password is checked, then every session ends at once", async () => {
    const api = spa();
    await unwrap(api.client.POST("/v1/auth/login", { body: { email, password } }));
    const wrong = await problemOf(api.client.DELETE("/v1/me", { body: { password: "not the password" } }));
    expect([wrong.status, wrong.code]).toEqual([422, "validation_failed"]);
    const done = await unwrap(api.client.DELETE("/v1/me", { body: { password } }));
    expect(done.status).toBe("scheduled");
    expect((await problemOf(api.client.GET("/v1/me"))).status).toBe(401);
    // Not checked here: signing in again. While the erasure job runs, POST /v1/auth/login for
    // the account answers 500 (activity_events foreign key; reported), not 401.
  });

  test("every answer above matched openapi.json", () => {
    expect(checked.responses).toBeGreaterThan(50);
    expect(checked.bodies).toBeGreaterThan(40);
  });
});
