#!/usr/bin/env node
// The `portwire` command: registers tsx so the TypeScript sources load, then runs the CLI.
import { register } from 'tsx/esm/api';

register();
const { run } = await import('./cli.ts');
await run();
