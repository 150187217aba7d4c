// Starts the `gptimage2` binary on a fresh database, a free port, local storage and the SMTP
// capture; stops it (SIGTERM) and drops the database afterwards.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { SmtpCapture } from "./smtp";

const PG_HOST = process.env.GI2_PG_HOST ?? "127.0.0.1";
const PG_PORT = process.env.GI2_PG_PORT ?? "5432";

export function binaryPath(): string {
  return (
    process.env.GI2_BIN ??
    join(process.env.CARGO_TARGET_DIR ?? "/var/cache/gptimage2/target", "debug", "gptimage2")
  );
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((ok) => server.listen(0, "127.0.0.1", ok));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((ok) => server.close(() => ok()));
  return port;
}

function psql(sql: string) {
  execFileSync("psql", ["-h", PG_HOST, "-p", PG_PORT, "-U", "postgres", "-d", "postgres", "-qAtc", sql], {
    stdio: ["ignore", "ignore", "inherit"],
  });
}

export class LiveServer {
  readonly mail: SmtpCapture;
  readonly baseUrl: string;
  readonly env: NodeJS.ProcessEnv;
  private child: ChildProcess;
  private db: string;
  private storage: string;
  log = "";

  private constructor(mail: SmtpCapture, baseUrl: string, env: NodeJS.ProcessEnv, child: ChildProcess, db: string, storage: string) {
    this.mail = mail;
    this.baseUrl = baseUrl;
    this.env = env;
    this.child = child;
    this.db = db;
    this.storage = storage;
  }

  static async start(): Promise<LiveServer> {
    const bin = resolve(binaryPath());
    const mail = await SmtpCapture.start();
    const port = await freePort();
    // gi2_test_ prefix: scripts/test drops leftovers of crashed runs.
    const db = `gi2_test_contract_${process.pid}_${Date.now().toString(36)}`;
    psql(`CREATE DATABASE "${db}"`);
    const storage = mkdtempSync(join(tmpdir(), "gi2-contract-objects-"));
    const baseUrl = `http://127.0.0.1:${port}`;
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      GI2_ENV: "development",
      GI2_DATABASE_URL: `postgres://postgres@${PG_HOST}:${PG_PORT}/${db}`,
      GI2_DATABASE_POOL_SIZE: "4",
      GI2_STORAGE: "local",
      GI2_STORAGE_DIR: storage,
      GI2_BIND: `127.0.0.1:${port}`,
      GI2_PUBLIC_URL: baseUrl,
      GI2_CORS_ORIGINS: baseUrl,
      GI2_SMTP_URL: `smtp://127.0.0.1:${mail.port}`,
      GI2_JOB_POLL_MS: "100",
      // The flows receive generation webhooks on a local plain-http listener.
      GI2_WEBHOOK_ALLOWED_HOSTS: "127.0.0.1",
      GI2_SUPPORT_EMAIL: "support@example.com",
      GI2_HTTP_WORKERS: "2",
      GI2_LOG: process.env.GI2_CONTRACT_SERVER_LOG_LEVEL ?? "warn",
      // Fixed keys so `admin` commands and the server agree (and tokens survive nothing else).
      GI2_JWT_SECRET: "contract-tests-jwt-secret-0123456789abcdef",
      GI2_URL_SIGNING_KEY: "contract-tests-url-signing-key-0123456789ab",
      // Cheap password hashing: the flows sign in a dozen times.
      GI2_ARGON2_MEMORY_KIB: "8192",
      GI2_ARGON2_ITERATIONS: "1",
    };
    const child = spawn(bin, ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
    // Never leave the server behind, even when the test process dies without afterAll.
    const reap = () => child.kill("SIGKILL");
    process.once("exit", reap);
    child.once("exit", () => process.off("exit", reap));
    const server = new LiveServer(mail, baseUrl, env, child, db, storage);
    const keep = (chunk: Buffer) => {
      server.log = (server.log + chunk.toString("utf8")).slice(-20_000);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    const deadline = Date.now() + 45_000;
    for (;;) {
      if (child.exitCode !== null) {
        await server.stop();
        throw new Error(`gptimage2 exited with ${child.exitCode} at start-up:\n${server.log}`);
      }
      try {
        const res = await fetch(`${baseUrl}/readyz`);
        if (res.ok) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        await server.stop();
        throw new Error(`gptimage2 was not ready within 45 s:\n${server.log}`);
      }
      await new Promise((ok) => setTimeout(ok, 100));
    }
    return server;
  }

  /** `gptimage2 admin grant-credits` against the same database. */
  grantCredits(email: string, amount: number) {
    execFileSync(binaryPath(), ["admin", "grant-credits", "--email", email, "--amount", String(amount), "--reason", "contract test"], {
      env: this.env,
      stdio: ["ignore", "ignore", "inherit"],
    });
  }

  async stop(): Promise<void> {
    if (process.env.GI2_CONTRACT_SERVER_LOG) writeFileSync(process.env.GI2_CONTRACT_SERVER_LOG, this.log);
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise<void>((ok) => this.child.once("exit", () => ok()));
      this.child.kill("SIGTERM");
      const timer = setTimeout(() => this.child.kill("SIGKILL"), 25_000);
      await exited;
      clearTimeout(timer);
    }
    await this.mail.stop();
    rmSync(this.storage, { recursive: true, force: true });
    psql(`DROP DATABASE IF EXISTS "${this.db}" WITH (FORCE)`);
  }
}

/** A fetch that behaves like a browser page served from `origin`: it keeps cookies (honouring
 * Path, Max-Age and Expires) and sends `Origin` on every request that is not GET/HEAD. */
export function browserFetch(origin: string): typeof fetch & { cookies: Map<string, { value: string; path: string }> } {
  const cookies = new Map<string, { value: string; path: string; expires?: number }>();
  const wrapped = async (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    const request = new Request(input, init);
    const url = new URL(request.url);
    const now = Date.now();
    const jar = [...cookies.entries()]
      .filter(([, c]) => (c.expires === undefined || c.expires > now) && url.pathname.startsWith(c.path))
      .map(([name, c]) => `${name}=${c.value}`);
    if (jar.length && request.credentials !== "omit") request.headers.set("Cookie", jar.join("; "));
    if (request.method !== "GET" && request.method !== "HEAD") request.headers.set("Origin", origin);
    const response = await fetch(request);
    for (const line of response.headers.getSetCookie()) {
      const [pair = "", ...attrs] = line.split(";").map((s) => s.trim());
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = "/";
      let expires: number | undefined;
      for (const attr of attrs) {
        const [k = "", v = ""] = attr.split("=");
        if (k.toLowerCase() === "path") path = v;
        if (k.toLowerCase() === "max-age") expires = now + Number(v) * 1000;
        if (k.toLowerCase() === "expires" && expires === undefined) expires = Date.parse(v);
      }
      if (expires !== undefined && expires <= now) cookies.delete(name);
      else cookies.set(name, { value, path, expires });
    }
    return response;
  };
  return Object.assign(wrapped, { cookies });
}
