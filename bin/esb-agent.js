#!/usr/bin/env node
// The installed command: runs the compiled CLI (npm run build writes dist/).
import { runCli } from '../dist/cli.js';

process.exitCode = await runCli(process.argv.slice(2));
