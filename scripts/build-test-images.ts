/**
 * Builds (or finds in the cache) the OCI test images and prints a summary as JSON. The builder
 * is a test library, test/harness/image-builder.ts; this is only its command line.
 *
 *   node --import tsx scripts/build-test-images.ts [outDir]
 */
import { buildTestImages, DEFAULT_IMAGES_DIR, type BuiltImage } from '../test/harness/image-builder.js';

const t0 = Date.now();
const images = await buildTestImages(process.argv[2] ?? DEFAULT_IMAGES_DIR);
const summary = (img: BuiltImage): Record<string, unknown> => ({
  digest: img.digest,
  mediaType: img.mediaType,
  manifests: img.manifests.map((m) => ({
    platform: `${m.platform.os}/${m.platform.architecture}${m.platform.variant ? '/' + m.platform.variant : ''}`,
    digest: m.digest,
    layers: m.layers.map((l) => ({ digest: l.digest, size: l.size, uncompressedSize: l.uncompressedSize })),
  })),
});
process.stdout.write(
  JSON.stringify(
    {
      dir: images.dir,
      cached: images.cached,
      ms: Date.now() - t0,
      busybox: summary(images.busybox),
      worker: summary(images.worker),
      multiarch: summary(images.multiarch),
    },
    null,
    2,
  ) + '\n',
);
