/**
 * Runs the CLI from source for tests, as bin/esb-agent.js runs it from dist/:
 * `node --import tsx test/helpers/cli-entry.ts <args>`.
 */
import { runCli } from '../../src/cli.js';

process.exitCode = await runCli(process.argv.slice(2));
