/**
 * OCI descriptors in containerd's wire form (containerd.types.Descriptor) and back: the
 * containerd side of registry/oci.ts, which stays runtime-neutral.
 */
import type {
  Descriptor__Output as WireDescriptor,
  Descriptor as WireDescriptorIn,
} from '../../../gen/containerd/containerd/types/Descriptor.js';
import type { Descriptor } from '../../../registry/oci.js';

/** Converts a domain descriptor to containerd's wire form. */
export function toWire(d: Descriptor): WireDescriptorIn {
  return { media_type: d.mediaType, digest: d.digest, size: d.size, annotations: { ...d.annotations } };
}

/** Converts containerd's wire descriptor to the domain form. */
export function fromWire(d: WireDescriptor): Descriptor {
  return { mediaType: d.media_type, digest: d.digest, size: Number(d.size), annotations: d.annotations };
}
