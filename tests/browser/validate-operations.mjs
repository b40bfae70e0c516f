// Validates schema.graphql and every GraphQL operation shipped under playground/ with
// graphql-js, the reference implementation clients' toolchains are built on: a renamed
// field or a wrong argument in an example fails here, not in a user's browser.
//
//   node tests/browser/validate-operations.mjs   (from the repository root)

import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { buildSchema, parse, validate, validateSchema, Source } from "graphql";

const root = new URL("../..", import.meta.url).pathname;

function operationFiles(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (name === "node_modules") return [];
    if (statSync(path).isDirectory()) return operationFiles(path);
    return name.endsWith(".graphql") ? [path] : [];
  });
}

let failures = 0;
const schema = buildSchema(readFileSync(join(root, "schema.graphql"), "utf8"));
for (const error of validateSchema(schema)) {
  failures += 1;
  console.error(`schema.graphql: ${error.message}`);
}

const files = operationFiles(join(root, "playground"));
let operations = 0;
for (const file of files) {
  const name = relative(root, file);
  let document;
  try {
    document = parse(new Source(readFileSync(file, "utf8"), name));
  } catch (error) {
    failures += 1;
    console.error(`${name}: ${error.message}`);
    continue;
  }
  operations += document.definitions.filter((d) => d.kind === "OperationDefinition").length;
  for (const error of validate(schema, document)) {
    failures += 1;
    const where = error.locations?.map((l) => `${l.line}:${l.column}`).join(", ") ?? "";
    console.error(`${name} ${where}: ${error.message}`);
  }
}

if (files.length === 0) {
  console.error("no .graphql files found under playground/: nothing was checked");
  process.exit(1);
}
if (failures > 0) {
  console.error(`${failures} problem(s) in schema.graphql or the playground's operations`);
  process.exit(1);
}
console.log(`graphql-js: schema.graphql valid; ${operations} operations in ${files.length} files valid`);
