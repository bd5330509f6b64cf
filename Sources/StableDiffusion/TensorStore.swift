import Foundation
import SafeTensors

/// One or more safetensors files seen as a single name -> tensor map (a single file or shards).
public final class TensorStore: @unchecked Sendable {
    /// A tensor and the file holding it.
    public struct Location: Sendable {
        public var file: SafeTensorsFile
        public var info: TensorInfo
    }

    /// The files, in the order given.
    public let files: [SafeTensorsFile]
    private let index: [String: Location]
    /// All tensor names, sorted.
    public let names: [String]

    /// Opens `paths` (lazily: headers only) and indexes their tensors. A name present in two
    /// files is an error.
    public init(paths: [String]) throws(CheckpointError) {
        var files: [SafeTensorsFile] = []
        var index: [String: Location] = [:]
        for p in paths {
            let f: SafeTensorsFile
            do { f = try SafeTensorsFile(path: p) } catch { throw .safetensors(error) }
            for t in f.tensors {
                if let prev = index[t.name] { throw .duplicateTensor(name: t.name, first: prev.file.path, second: p) }
                index[t.name] = Location(file: f, info: t)
            }
            files.append(f)
        }
        self.files = files
        self.index = index
        names = index.keys.sorted()
    }

    public subscript(name: String) -> Location? { index[name] }

    /// Total bytes of tensor data.
    public var dataBytes: Int { files.reduce(0) { $0 + $1.header.dataSize } }
}
