/**
 * The shared contract cases (conformance/cases.ts) on both runtimes: a private containerd +
 * CNI stack (harness/stack.ts) and a private dockerd stack (harness/docker-stack.ts), each with
 * its own registry, test network and in-process agent.
 */
import { conformanceSuite } from './conformance/cases.js';
import { leakCount, startStack } from '../harness/stack.js';
import { dockerLeakCount, startDockerStack } from '../harness/docker-stack.js';

conformanceSuite('containerd', async () => {
  const stack = await startStack();
  return {
    images: stack.images,
    registryHost: stack.registry.host,
    idPrefix: stack.idPrefix,
    subnet: stack.subnet,
    call: (m, r, o) => stack.call(m, r, o),
    callError: (m, r, o) => stack.callError(m, r, o),
    leaks: async () => {
      const report = await stack.leaks();
      return { count: leakCount(report), report };
    },
    stop: () => stack.stop(),
  };
});

conformanceSuite('docker', async () => {
  const stack = await startDockerStack();
  return {
    images: stack.images,
    registryHost: stack.registry.host,
    idPrefix: stack.idPrefix,
    subnet: stack.subnet,
    call: (m, r, o) => stack.call(m, r, o),
    callError: (m, r, o) => stack.callError(m, r, o),
    leaks: async () => {
      const report = await stack.leaks();
      return { count: dockerLeakCount(report), report };
    },
    stop: () => stack.stop(),
  };
});
