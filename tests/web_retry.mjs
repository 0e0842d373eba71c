// Runs the web client's retry policy (web/src/api/writes.ts) as the browser would: the
// TypeScript transpiled by the web client's own compiler, then imported. Reads a JSON list
// of retryDelay argument lists on stdin; prints the delays, and a fresh clientId() with and
// without crypto.randomUUID (an insecure context).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [source, webDir] = process.argv.slice(2);
const ts = createRequire(join(webDir, "package.json"))("typescript");
const { outputText } = ts.transpileModule(readFileSync(source, "utf8"), {
  compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
});
const dir = mkdtempSync(join(tmpdir(), "yihao-writes-"));
try {
  const file = join(dir, "writes.mjs");
  writeFileSync(file, outputText);
  const writes = await import(pathToFileURL(file).href);
  const cases = JSON.parse(readFileSync(0, "utf8"));
  const delays = cases.map((args) => writes.retryDelay(...args));
  const id = writes.clientId();
  // A page served over plain HTTP on a LAN address is not a secure context: no randomUUID.
  Object.defineProperty(globalThis.crypto, "randomUUID", { value: undefined, configurable: true });
  const insecureId = writes.clientId();
  process.stdout.write(JSON.stringify({ delays, id, insecureId }));
} finally {
  rmSync(dir, { recursive: true, force: true });
}
