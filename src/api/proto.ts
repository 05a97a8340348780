/**
 * The AgentService proto, loaded at run time: the one loader the server and the CLI's client
 * (cli/agent-client.ts) share. A leaf: it imports no server code, so the CLI does not pull
 * the gRPC server in to talk to it.
 */
import path from 'node:path';
import * as protoLoader from '@grpc/proto-loader';
import { AGENT_PROTO_DIR } from '../paths.js';
import { PROTO_LOADER_OPTIONS } from '../proto-options.js';

/** The AgentService definition, loaded at run time with the same options the types were generated with. */
export function loadAgentPackage(): protoLoader.PackageDefinition {
  return protoLoader.loadSync(path.join(AGENT_PROTO_DIR, 'agent.proto'), PROTO_LOADER_OPTIONS);
}
