// An outside verifier written from docs/signatures.md alone: node:crypto, nothing else.
//
//   node verify_signature.mjs prescription|opinion|document-reference < response-body.json
//
// reads the HTTP answer's body as the server sent it (GET /api/v1/prescriptions/{id},
// GET /api/v1/consults/{id}/opinion, GET /fhir/DocumentReference/{id}) and prints
// {"key_id_ok": bool, "valid": bool}.
import { createHash, createPublicKey, verify } from "node:crypto";
import { readFileSync } from "node:fs";

// RFC 8785 for strings, numbers, booleans, null, arrays and objects: JSON.stringify with
// object members sorted by key (UTF-16 code units, which is what sort() compares).
const canon = (v) =>
  Array.isArray(v)
    ? `[${v.map(canon).join(",")}]`
    : v !== null && typeof v === "object"
      ? `{${Object.keys(v)
          .sort()
          .map((k) => `${JSON.stringify(k)}:${canon(v[k])}`)
          .join(",")}}`
      : JSON.stringify(v);

function signedBytes(kind, body) {
  if (kind === "document-reference") {
    // The first attachment is the signed bytes themselves; the second, the signature.
    const [doc, sig] = body.content.map((c) => Buffer.from(c.attachment.data, "base64"));
    return [doc, JSON.parse(sig.toString("utf8"))];
  }
  const document = kind === "prescription" ? body.content : body.opinion;
  const signature = body.signature;
  if (signature.canon !== "jcs") throw new Error(`unexpected canon ${signature.canon}`);
  return [Buffer.from(canon(document), "utf8"), signature];
}

const kind = process.argv[2];
const body = JSON.parse(readFileSync(0, "utf8"));
const [data, signature] = signedBytes(kind, body);
const raw = Buffer.from(signature.public_key, "base64");
const key = createPublicKey({
  key: { kty: "OKP", crv: "Ed25519", x: raw.toString("base64url") },
  format: "jwk",
});
const keyIdOk =
  signature.alg === "Ed25519" &&
  raw.length === 32 &&
  createHash("sha256").update(raw).digest("hex") === signature.key_id;
const valid = verify(null, data, key, Buffer.from(signature.value, "base64"));
process.stdout.write(JSON.stringify({ key_id_ok: keyIdOk, valid }) + "\n");
