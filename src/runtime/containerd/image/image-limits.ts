/**
 * Size bounds of one image, checked on the manifest's declared sizes before anything is
 * downloaded (AGENT_IMAGE_MAX_LAYERS, AGENT_IMAGE_MAX_LAYER_BYTES, AGENT_IMAGE_MAX_BYTES). The
 * declared sizes are also enforced while the bytes stream in: the content writer refuses a
 * blob body longer than its descriptor says, so a registry that lies gets no further than the
 * bound. An image over a bound can never be pulled: INVALID_ARGUMENT, not a retryable code.
 */
import { AgentError } from '../../../errors.js';
import type { ImageManifest } from '../../../registry/oci.js';

export interface ImageLimits {
  readonly maxLayers: number;
  readonly maxLayerBytes: number;
  readonly maxImageBytes: number;
}

/** Which bound an image broke, for the refusal counter's `reason` label. */
export type ImageLimitReason = 'layers' | 'layer_bytes' | 'image_bytes';

/** An AgentError that says which bound was broken. */
export class ImageLimitError extends AgentError {
  readonly reason: ImageLimitReason;

  constructor(reason: ImageLimitReason, message: string) {
    super('INVALID_ARGUMENT', message);
    this.reason = reason;
  }
}

/**
 * Checks a manifest against the bounds.
 *
 * @throws ImageLimitError (INVALID_ARGUMENT) naming the bound and its variable.
 */
export function checkImageLimits(name: string, manifest: ImageManifest, limits: ImageLimits): void {
  const layers = manifest.layers;
  if (layers.length > limits.maxLayers) {
    throw new ImageLimitError('layers', `image ${name} has ${layers.length} layers, more than AGENT_IMAGE_MAX_LAYERS=${limits.maxLayers}`);
  }
  let total = manifest.config.size;
  for (const l of layers) {
    if (l.size > limits.maxLayerBytes) {
      throw new ImageLimitError(
        'layer_bytes',
        `image ${name}: layer ${l.digest} declares ${l.size} bytes, more than AGENT_IMAGE_MAX_LAYER_BYTES=${limits.maxLayerBytes}`,
      );
    }
    total += l.size;
  }
  if (total > limits.maxImageBytes) {
    throw new ImageLimitError(
      'image_bytes',
      `image ${name} declares ${total} bytes, more than AGENT_IMAGE_MAX_BYTES=${limits.maxImageBytes}`,
    );
  }
}
