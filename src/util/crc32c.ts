/**
 * CRC-32C, used to check stored records and snapshot chunks in transit. Pure.
 * @module
 */

/** CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) tables for slicing-by-8. */
const CRC_TABLE: Uint32Array = (() => {
  const t = new Uint32Array(8 * 256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1
    t[n] = c >>> 0
  }
  for (let n = 0; n < 256; n++) {
    let c = t[n]!
    for (let k = 1; k < 8; k++) {
      c = t[c & 0xff]! ^ (c >>> 8)
      t[k * 256 + n] = c >>> 0
    }
  }
  return t
})()

/**
 * CRC-32C (Castagnoli) of `data`, as an unsigned 32-bit integer. `crc32c('123456789')` is
 * `0xe3069283`.
 * @param data - the bytes to checksum
 * @param seed - the CRC of preceding bytes, to checksum data in pieces
 */
export function crc32c(data: Uint8Array, seed = 0): number {
  const T = CRC_TABLE
  let c = ~seed
  let i = 0
  const n = data.length
  const end8 = n - (n & 7)
  while (i < end8) {
    const lo = c ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))
    const hi = data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24)
    c =
      T[7 * 256 + (lo & 0xff)]! ^
      T[6 * 256 + ((lo >>> 8) & 0xff)]! ^
      T[5 * 256 + ((lo >>> 16) & 0xff)]! ^
      T[4 * 256 + (lo >>> 24)]! ^
      T[3 * 256 + (hi & 0xff)]! ^
      T[2 * 256 + ((hi >>> 8) & 0xff)]! ^
      T[256 + ((hi >>> 16) & 0xff)]! ^
      T[hi >>> 24]!
    i += 8
  }
  while (i < n) c = T[(c ^ data[i++]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}
