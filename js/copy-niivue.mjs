// Copy NiiVue's prebuilt UMD bundle (a classic script, so it loads from file:// pages) and its
// version into medseg/viewer/static/, where the Python package ships it (package data).
import { copyFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, "node_modules", "@niivue", "niivue");
const target = join(here, "..", "medseg", "viewer", "static");
const { version, license } = JSON.parse(readFileSync(join(source, "package.json"), "utf8"));
mkdirSync(target, { recursive: true });
copyFileSync(join(source, "dist", "niivue.umd.js"), join(target, "niivue.umd.js.part"));
renameSync(join(target, "niivue.umd.js.part"), join(target, "niivue.umd.js"));
writeFileSync(join(target, "niivue.json"), JSON.stringify({ package: "@niivue/niivue", version, license }, null, 2) + "\n");
console.log(`medseg viewer: NiiVue ${version} (${license}) copied to ${target}`);
