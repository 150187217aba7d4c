// A small typed client for the GPT Image 2 API: openapi-fetch over the generated `schema.d.ts`,
// plus the access token, one refresh-and-retry on 401, and problem+json errors as `ApiProblem`.
//
//   const api = createApiClient({ baseUrl: "https://api.example.com", mode: "cookie" });
//   await unwrap(api.client.POST("/v1/auth/login", { body: { email, password } })); // token kept
//   const me = await unwrap(api.client.GET("/v1/me"));
//
// Modes: "cookie" (browsers: the refresh token is the HttpOnly `gi2_refresh` cookie, sent with
// `credentials: "include"`), "mobile" (the refresh token comes in the body and is sent back in
// the body), "apiKey" (a `gi2_…` key as the bearer; nothing to refresh).
import createClient, { type Client, type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type { components, paths } from "./schema";
export type Schemas = components["schemas"];
export type Problem = Schemas["Problem"];
export type AuthResponse = Schemas["AuthResponse"];

/** An error answer of the API (RFC 9457 problem+json), as a throwable typed value. */
export class ApiProblem extends Error implements Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly code: string;
  readonly errors?: Schemas["FieldError"][];
  readonly request_id?: string | null;
  /** The raw answer, for headers such as `Retry-After`. */
  readonly response: Response;

  constructor(problem: Problem, response: Response) {
    super(`${problem.status} ${problem.code}: ${problem.detail}`);
    this.name = "ApiProblem";
    this.type = problem.type;
    this.title = problem.title;
    this.status = problem.status;
    this.detail = problem.detail;
    this.code = problem.code;
    this.errors = problem.errors;
    this.request_id = problem.request_id;
    this.response = response;
  }

  /** The error body of an openapi-fetch result as an ApiProblem. A body that is not
   * problem+json (a proxy's HTML page, say) becomes code `unexpected_response`. */
  static from(error: unknown, response: Response): ApiProblem {
    const type = response.headers.get("content-type") ?? "";
    if (type.startsWith("application/problem+json") && isProblem(error)) {
      return new ApiProblem(error, response);
    }
    return new ApiProblem(
      {
        type: "about:blank",
        title: response.statusText || "Unexpected response",
        status: response.status,
        detail: `expected application/problem+json, got ${type || "no content type"}: ${String(
          typeof error === "string" ? error : JSON.stringify(error),
        ).slice(0, 200)}`,
        code: "unexpected_response",
        request_id: response.headers.get("x-request-id"),
      },
      response,
    );
  }
}

function isProblem(value: unknown): value is Problem {
  if (typeof value !== "object" || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.type === "string" &&
    typeof v.title === "string" &&
    typeof v.status === "number" &&
    typeof v.detail === "string" &&
    typeof v.code === "string"
  );
}

/** The shape of an openapi-fetch result. */
export interface FetchResult {
  data?: unknown;
  error?: unknown;
  response: Response;
}

/** The data of a call (typed from the spec's success response), or throws its error as an
 * `ApiProblem`. Calls answered without a body (204) resolve to `undefined`. */
export async function unwrap<R extends FetchResult>(call: Promise<R>): Promise<Exclude<R["data"], undefined>> {
  const result = await call;
  if (result.error !== undefined || !result.response.ok) {
    throw ApiProblem.from(result.error, result.response);
  }
  return result.data as Exclude<R["data"], undefined>;
}

/** The `ApiProblem` of a call that must fail; throws if it succeeded. */
export async function problemOf(call: Promise<FetchResult>): Promise<ApiProblem> {
  const result = await call;
  if (result.response.ok) {
    throw new Error(`expected an error, got ${result.response.status} ${result.response.url}`);
  }
  return ApiProblem.from(result.error, result.response);
}

export type AuthMode = "cookie" | "mobile" | "apiKey";

export interface ApiClientOptions {
  baseUrl: string;
  mode: AuthMode;
  /** The API key, for mode "apiKey". */
  apiKey?: string;
  /** A stored refresh token, for mode "mobile" (e.g. from the keychain). */
  refreshToken?: string;
  /** The fetch to use (a test passes one with a cookie jar; browsers keep the default). */
  fetch?: typeof globalThis.fetch;
  /** Called with every new token pair (persist `refresh_token` in mobile mode). */
  onTokens?: (tokens: AuthResponse) => void;
  /** Called when a refresh fails: the user must sign in again. */
  onSignedOut?: (problem: ApiProblem) => void;
  /** Extra openapi-fetch middleware, run outside the auth one (it sees the final answers). */
  middleware?: Middleware[];
}

/** Routes whose 401 means "wrong credentials", not "access token expired". */
const NO_REFRESH = new Set(["/v1/auth/login", "/v1/auth/register", "/v1/auth/refresh", "/v1/auth/logout"]);
/** Routes whose answer carries a new token pair. */
const ISSUES_TOKENS = new Set(["/v1/auth/login", "/v1/auth/register", "/v1/auth/refresh"]);

export interface ApiClient {
  /** The typed openapi-fetch client; every call gets the token and the refresh-once logic. */
  client: Client<paths>;
  readonly mode: AuthMode;
  accessToken(): string | undefined;
  refreshToken(): string | undefined;
  setTokens(tokens: AuthResponse): void;
  clearTokens(): void;
  /** Exchanges the refresh token for a new pair (one refresh at a time; concurrent callers share it). */
  refresh(): Promise<AuthResponse>;
}

export function createApiClient(options: ApiClientOptions): ApiClient {
  const baseFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  let access: string | undefined = options.mode === "apiKey" ? options.apiKey : undefined;
  let refreshTok: string | undefined = options.refreshToken;
  let inflight: Promise<AuthResponse> | undefined;
  const retryCopies = new Map<string, { copy: Request; token: string | undefined }>();

  const client = createClient<paths>({
    baseUrl: options.baseUrl,
    fetch: baseFetch,
    // Browsers send the refresh cookie only with credentials (it is scoped to /v1/auth).
    credentials: options.mode === "cookie" ? "include" : "omit",
  });

  const setTokens = (tokens: AuthResponse) => {
    access = tokens.access_token;
    if (options.mode === "mobile" && tokens.refresh_token) refreshTok = tokens.refresh_token;
    options.onTokens?.(tokens);
  };

  const refresh = (): Promise<AuthResponse> => {
    if (options.mode === "apiKey") return Promise.reject(new Error("API keys are not refreshed"));
    inflight ??= (async () => {
      try {
        const body = options.mode === "mobile" ? { refresh_token: refreshTok ?? null } : undefined;
        const result = await client.POST("/v1/auth/refresh", { body });
        if (result.error !== undefined || !result.response.ok) {
          const problem = ApiProblem.from(result.error, result.response);
          access = undefined;
          options.onSignedOut?.(problem);
          throw problem;
        }
        return result.data;
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  };

  const withToken = (request: Request): Request => {
    if (access && !request.headers.has("authorization")) {
      request.headers.set("Authorization", `Bearer ${access}`);
    }
    return request;
  };

  const auth: Middleware = {
    onRequest({ request, schemaPath, id }) {
      const ownHeader = request.headers.has("authorization");
      withToken(request);
      if (options.mode !== "apiKey" && !ownHeader && !NO_REFRESH.has(schemaPath)) {
        // Kept to resend after a refresh: a sent body cannot be read again.
        retryCopies.set(id, { copy: request.clone(), token: access });
      }
      return request;
    },
    async onResponse({ response, schemaPath, id }) {
      const sent = retryCopies.get(id);
      retryCopies.delete(id);
      if (ISSUES_TOKENS.has(schemaPath) && response.ok) {
        setTokens((await response.clone().json()) as AuthResponse);
        return undefined;
      }
      if (schemaPath === "/v1/auth/logout" && response.ok) {
        access = undefined;
        refreshTok = undefined;
        return undefined;
      }
      // A 401 on any other route means the access token is missing or expired (a reloaded SPA
      // has none yet): refresh once and resend; a failed refresh leaves the 401 as it is.
      if (response.status !== 401 || !sent) return undefined;
      // Another call may have refreshed while this one was under way: then just resend.
      if (access === undefined || access === sent.token) {
        try {
          await refresh();
        } catch {
          return undefined; // the original 401 stands
        }
      }
      const retry = new Request(sent.copy);
      retry.headers.set("Authorization", `Bearer ${access}`);
      return baseFetch(retry);
    },
    onError({ id }) {
      retryCopies.delete(id);
    },
  };
  client.use(...(options.middleware ?? []), auth);

  return {
    client,
    mode: options.mode,
    accessToken: () => access,
    refreshToken: () => refreshTok,
    setTokens,
    clearTokens: () => {
      access = options.mode === "apiKey" ? options.apiKey : undefined;
      refreshTok = undefined;
    },
    refresh,
  };
}
