/**
 * containerd image records (docs/containerd.md#image-records): the name is the full normalised reference,
 * the target the top descriptor (the index for a multi-platform image). The record is the GC
 * root of everything the pull wrote.
 */
import { isAlreadyExists, isNotFound } from '../../../errors.js';
import type { ContainerdClient, RequestOptions } from '../client.js';
import type { Descriptor } from '../../../registry/oci.js';
import { fromWire, toWire } from './wire.js';

/** An image record as the agent uses it. */
export interface ImageRecord {
  readonly name: string;
  readonly target: Descriptor;
  readonly labels: Readonly<Record<string, string>>;
}

/** Images.Get; undefined when there is no record of that name. */
export async function getImage(c: ContainerdClient, name: string, signal?: AbortSignal): Promise<ImageRecord | undefined> {
  try {
    const res = await c.call('images', 'Get', { name }, { signal, what: `get image ${name}` });
    if (!res.image?.target) return undefined;
    return { name: res.image.name, target: fromWire(res.image.target), labels: res.image.labels };
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Bound on Create/Update retries when another writer keeps deleting and re-creating the name. */
const PUT_ATTEMPTS = 5;

/**
 * Creates the record, or points an existing one at `target`: Create, on ALREADY_EXISTS Update
 * with `update_mask: target`, and on NOT_FOUND (deleted in between) create again — the Go
 * client's loop (docs/containerd.md#pulling).
 */
export async function putImage(
  c: ContainerdClient,
  name: string,
  target: Descriptor,
  opts: { signal?: AbortSignal | undefined; labels?: Readonly<Record<string, string>> } = {},
): Promise<void> {
  const image = { name, labels: { ...opts.labels }, target: toWire(target) };
  for (let attempt = 1; ; attempt++) {
    try {
      await c.call('images', 'Create', { image }, { signal: opts.signal, what: `create image ${name}` });
      return;
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
    }
    try {
      await c.call(
        'images',
        'Update',
        { image, update_mask: { paths: ['target'] } },
        { signal: opts.signal, what: `update image ${name}` },
      );
      return;
    } catch (err) {
      if (!isNotFound(err) || attempt >= PUT_ATTEMPTS) throw err;
    }
  }
}

/** Images.Delete without a synchronous GC; a record already gone counts as deleted. */
export async function deleteImage(c: ContainerdClient, name: string, opts: RequestOptions): Promise<void> {
  try {
    await c.call('images', 'Delete', { name, sync: false }, { ...opts, what: `delete image ${name}` });
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}
