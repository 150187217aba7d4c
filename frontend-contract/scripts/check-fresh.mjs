// Fails when src/schema.d.ts is not what openapi-typescript makes of ../openapi/openapi.json.
// Fix: `npm run generate` (and commit src/schema.d.ts).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

// The same command as `npm run generate`, writing to a temporary file instead.
const generate = JSON.parse(readFileSync("package.json", "utf8")).scripts.generate;
if (!generate.includes(" -o src/schema.d.ts")) throw new Error("the generate script must end in -o src/schema.d.ts");

const dir = mkdtempSync(join(tmpdir(), "gi2-schema-"));
try {
  const fresh = join(dir, "schema.d.ts");
  const [cmd, ...args] = generate.replace(" -o src/schema.d.ts", "").split(/\s+/);
  try {
    execFileSync("npx", ["--no-install", cmd, ...args, "-o", fresh], { stdio: ["ignore", "pipe", "pipe"] });
  } catch (error) {
    process.stderr.write(error.stdout ?? "");
    process.stderr.write(error.stderr ?? "");
    throw error;
  }
  let committed = "";
  try {
    committed = readFileSync("src/schema.d.ts", "utf8");
  } catch {
    // missing counts as stale
  }
  if (committed !== readFileSync(fresh, "utf8")) {
    console.error("src/schema.d.ts is stale: it does not match ../openapi/openapi.json. Run `npm run generate`.");
    try {
      execFileSync("diff", ["-u", "src/schema.d.ts", fresh], { stdio: "inherit" });
    } catch {
      // diff exits 1 when the files differ
    }
    process.exitCode = 1;
  } else {
    console.log("src/schema.d.ts is up to date with ../openapi/openapi.json");
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
