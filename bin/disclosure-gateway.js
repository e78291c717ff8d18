#!/usr/bin/env node
// Command line entry: Node runs the TypeScript sources itself (type stripping); dist/ when built for the image.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const built = join(root, 'dist', 'main.js');
const entry = existsSync(built) && !process.env.DG_FROM_SOURCE ? built : join(root, 'src', 'main.ts');
await import(pathToFileURL(entry).href);
