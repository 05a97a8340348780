/**
 * The shared contract cases (conformance/cases.ts) on both runtimes: a private containerd +
 * CNI stack (harness/stack.ts) and a private dockerd stack (harness/docker-stack.ts), each with
 * its own registry, test network and in-process agent.
 */
import { asConformanceStack, conformanceSuite } from './conformance/cases.js';
import { leakCount, startStack } from '../harness/stack.js';
import { dockerLeakCount, startDockerStack } from '../harness/docker-stack.js';

conformanceSuite('containerd', async () => asConformanceStack(await startStack(), leakCount));
conformanceSuite('docker', async () => asConformanceStack(await startDockerStack(), dockerLeakCount));
