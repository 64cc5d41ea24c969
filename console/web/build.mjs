// Builds dist/assets: the console's own files from src/ and xterm.js (ES
// module builds and CSS) from node_modules, as pinned by package-lock.json.
// No bundler: the browser loads ES modules from this origin.
import { cpSync, mkdirSync, rmSync } from 'node:fs';

const out = 'dist/assets';
rmSync('dist', { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const f of ['index.html', 'app.js', 'dom.js', 'style.css']) cpSync(`src/${f}`, `${out}/${f}`);
cpSync('node_modules/@xterm/xterm/lib/xterm.mjs', `${out}/xterm.mjs`);
cpSync('node_modules/@xterm/xterm/css/xterm.css', `${out}/xterm.css`);
cpSync('node_modules/@xterm/addon-fit/lib/addon-fit.mjs', `${out}/addon-fit.mjs`);
cpSync('node_modules/@xterm/xterm/LICENSE', `${out}/xterm.LICENSE`);
console.log(`built ${out}`);
