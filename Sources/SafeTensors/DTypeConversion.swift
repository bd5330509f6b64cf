#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Element conversion between F32, F16 and BF16, bit-exact with PyTorch's casts
/// (round to nearest even; NaN becomes the canonical quiet NaN).
public enum DTypeConversion {
    /// Converts `src` (elements of `from`) into `dst` (elements of `to`).
    ///
    /// Both must be F32, F16 or BF16 and hold the same number of elements.
    public static func convert(
        _ src: UnsafeRawBufferPointer, from: DType, to: DType, into dst: UnsafeMutableRawBufferPointer
    ) {
        precondition(from.isFloatConvertible && to.isFloatConvertible, "convert: F32/F16/BF16 only")
        let count = src.count / from.byteSize
        precondition(dst.count == count * to.byteSize, "convert: element counts differ")
        guard count > 0, let s = src.baseAddress, let d = dst.baseAddress else { return }
        if from == to {
            d.copyMemory(from: s, byteCount: src.count)
            return
        }
        // Tensor data in a file need not be aligned (the header length is any number); typed
        // loads and stores below must be, so misaligned buffers go through aligned blocks.
        if Int(bitPattern: s) % from.byteSize != 0 || Int(bitPattern: d) % to.byteSize != 0 {
            let block = 4096
            let a = UnsafeMutableRawBufferPointer.allocate(byteCount: block * from.byteSize, alignment: 16)
            let b = UnsafeMutableRawBufferPointer.allocate(byteCount: block * to.byteSize, alignment: 16)
            defer { a.deallocate(); b.deallocate() }
            var i = 0
            while i < count {
                let m = min(block, count - i)
                a.baseAddress!.copyMemory(from: s + i * from.byteSize, byteCount: m * from.byteSize)
                let out = UnsafeMutableRawBufferPointer(rebasing: b[0..<(m * to.byteSize)])
                convert(UnsafeRawBufferPointer(rebasing: a[0..<(m * from.byteSize)]), from: from, to: to, into: out)
                (d + i * to.byteSize).copyMemory(from: b.baseAddress!, byteCount: m * to.byteSize)
                i += m
            }
            return
        }
        switch (from, to) {
        case (.f16, .f32):
            f16ToF32(s.assumingMemoryBound(to: UInt16.self), d.assumingMemoryBound(to: UInt32.self), count)
        case (.bf16, .f32):
            bf16ToF32(s.assumingMemoryBound(to: UInt16.self), d.assumingMemoryBound(to: UInt32.self), count)
        case (.f32, .f16):
            f32ToF16(s.assumingMemoryBound(to: UInt32.self), d.assumingMemoryBound(to: UInt16.self), count)
        case (.f32, .bf16):
            f32ToBF16(s.assumingMemoryBound(to: UInt32.self), d.assumingMemoryBound(to: UInt16.self), count)
        default:
            // Half to half goes through F32 in blocks.
            let block = 4096
            let tmp = UnsafeMutablePointer<UInt32>.allocate(capacity: block)
            defer { tmp.deallocate() }
            var i = 0
            while i < count {
                let m = min(block, count - i)
                let si = s.assumingMemoryBound(to: UInt16.self) + i
                let di = d.assumingMemoryBound(to: UInt16.self) + i
                if from == .f16 { f16ToF32(si, tmp, m) } else { bf16ToF32(si, tmp, m) }
                if to == .f16 { f32ToF16(tmp, di, m) } else { f32ToBF16(tmp, di, m) }
                i += m
            }
        }
    }

    @inline(__always)
    static func f16ToF32(_ s: UnsafePointer<UInt16>, _ d: UnsafeMutablePointer<UInt32>, _ n: Int) {
        let magic = Float(bitPattern: 0x7780_0000)  // 2^112: rebias 15 -> 127
        for i in 0..<n {
            let h = UInt32(s[i])
            let em = h & 0x7FFF
            var f = (Float(bitPattern: em << 13) * magic).bitPattern
            f |= em >= 0x7C00 ? 0x7F80_0000 : 0
            d[i] = f | ((h & 0x8000) << 16)
        }
    }

    @inline(__always)
    static func bf16ToF32(_ s: UnsafePointer<UInt16>, _ d: UnsafeMutablePointer<UInt32>, _ n: Int) {
        for i in 0..<n { d[i] = UInt32(s[i]) << 16 }
    }

    @inline(__always)
    static func f32ToBF16(_ s: UnsafePointer<UInt32>, _ d: UnsafeMutablePointer<UInt16>, _ n: Int) {
        for i in 0..<n {
            let u = s[i]
            let isNaN = (u & 0x7FFF_FFFF) > 0x7F80_0000
            let rounded = (u &+ 0x7FFF &+ ((u >> 16) & 1)) >> 16
            d[i] = isNaN ? 0x7FC0 : UInt16(truncatingIfNeeded: rounded)
        }
    }

    @inline(__always)
    static func f32ToF16(_ s: UnsafePointer<UInt32>, _ d: UnsafeMutablePointer<UInt16>, _ n: Int) {
        let f32Infinity: UInt32 = 255 << 23
        let f16Max: UInt32 = (127 + 16) << 23
        let denormMagic: UInt32 = ((127 - 15) + (23 - 10) + 1) << 23
        let denormMagicF = Float(bitPattern: denormMagic)
        for i in 0..<n {
            let x = s[i]
            let sign = x & 0x8000_0000
            let u = x ^ sign
            var o: UInt32
            if u >= f16Max {
                o = u > f32Infinity ? 0x7E00 : 0x7C00
            } else if u < (113 << 23) {
                o = (Float(bitPattern: u) + denormMagicF).bitPattern &- denormMagic
            } else {
                let mantOdd = (u >> 13) & 1
                o = (u &+ (UInt32(bitPattern: Int32(15 - 127) << 23) &+ 0xFFF) &+ mantOdd) >> 13
            }
            d[i] = UInt16(truncatingIfNeeded: o | (sign >> 16))
        }
    }
}
