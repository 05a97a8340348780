/**
 * A 160-byte static x86-64 Linux program that calls io_uring_setup(1, &zeroed_params) and
 * exits 0 when the call succeeds, or with the errno when it fails (EPERM = 1 from a seccomp
 * filter or kernel.io_uring_disabled, ENOSYS = 38 without io_uring). Written out by hand so the
 * test needs neither a compiler nor a syscall binding inside the worker image.
 */

const ENTRY = 0x400078;

const CODE = Buffer.from([
  0x48,
  0x81,
  0xec,
  0x00,
  0x01,
  0x00,
  0x00, // sub rsp, 256
  0x48,
  0x89,
  0xe7, //                         mov rdi, rsp
  0x31,
  0xc0, //                               xor eax, eax
  0xb9,
  0x00,
  0x01,
  0x00,
  0x00, //             mov ecx, 256
  0xf3,
  0xaa, //                               rep stosb        (zero the params)
  0xbf,
  0x01,
  0x00,
  0x00,
  0x00, //             mov edi, 1       (entries)
  0x48,
  0x89,
  0xe6, //                         mov rsi, rsp     (params)
  0xb8,
  0xa9,
  0x01,
  0x00,
  0x00, //             mov eax, 425     (io_uring_setup)
  0x0f,
  0x05, //                               syscall
  0x48,
  0x85,
  0xc0, //                         test rax, rax
  0x78,
  0x04, //                               js err
  0x31,
  0xff, //                               xor edi, edi     (success: exit 0)
  0xeb,
  0x04, //                               jmp exit
  0x89,
  0xc7, //                          err: mov edi, eax
  0xf7,
  0xdf, //                               neg edi          (exit code = errno)
  0xb8,
  0x3c,
  0x00,
  0x00,
  0x00, //       exit: mov eax, 60
  0x0f,
  0x05, //                               syscall
]);

/** The probe as an ELF executable (x86-64 only). */
export function ioUringProbeElf(): Buffer {
  const header = Buffer.alloc(64 + 56);
  // ELF header
  Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]).copy(header, 0); // ELF64, little-endian, SysV
  header.writeUInt16LE(2, 16); // ET_EXEC
  header.writeUInt16LE(0x3e, 18); // x86-64
  header.writeUInt32LE(1, 20); // version
  header.writeBigUInt64LE(BigInt(ENTRY), 24); // entry
  header.writeBigUInt64LE(64n, 32); // program headers right after this header
  header.writeUInt16LE(64, 52); // header size
  header.writeUInt16LE(56, 54); // program header size
  header.writeUInt16LE(1, 56); // one program header
  // Program header: one PT_LOAD of the whole file, read + execute.
  const size = BigInt(header.length + CODE.length);
  header.writeUInt32LE(1, 64); // PT_LOAD
  header.writeUInt32LE(5, 68); // PF_R | PF_X
  header.writeBigUInt64LE(0n, 72); // offset
  header.writeBigUInt64LE(0x400000n, 80); // vaddr
  header.writeBigUInt64LE(0x400000n, 88); // paddr
  header.writeBigUInt64LE(size, 96); // filesz
  header.writeBigUInt64LE(size, 104); // memsz
  header.writeBigUInt64LE(0x1000n, 112); // align
  return Buffer.concat([header, CODE]);
}
