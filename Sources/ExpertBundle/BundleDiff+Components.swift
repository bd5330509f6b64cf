import Foundation
import SafeTensors

extension BundleDiff {
    /// One pipeline component of two bundles (formats/bundle.md, "Pipeline components"): whether
    /// each carries it, the files whose SHA-256 differs, and for the text encoder and VAE the
    /// tensor-level changes (as for the UNet's tensors).
    public struct ComponentChange: Encodable, Sendable, Equatable {
        /// `tokenizer`, `text_encoder` or `vae`.
        public var component: String
        public var inA: Bool
        public var inB: Bool
        /// Carried by both with the same bytes in every file.
        public var same: Bool
        /// Files (relative to the bundle) carried by one side only or with another SHA-256.
        public var filesChanged: [String]
        /// Every tensor in both with the same shape, largest relative change first.
        public var tensors: [TensorChange]
        public var tensorsOnlyInA: [TensorRef]
        public var tensorsOnlyInB: [TensorRef]
        public var tensorShapeChanges: [ShapeChange]

        enum CodingKeys: String, CodingKey, CaseIterable {
            case component, inA = "in_a", inB = "in_b", same, filesChanged = "files_changed", tensors
            case tensorsOnlyInA = "tensors_only_in_a", tensorsOnlyInB = "tensors_only_in_b", tensorShapeChanges = "tensor_shape_changes"
        }
    }

    /// The component rows of two bundles: one per component either carries (none when neither does).
    static func componentChanges(_ a: ExpertBundle, _ b: ExpertBundle) throws(BundleError) -> [ComponentChange] {
        guard a.hasComponents || b.hasComponents else { return [] }
        var rows: [ComponentChange] = []
        for kind in ComponentKind.allCases {
            let ca = a.component(kind), cb = b.component(kind)
            let fa = Dictionary((ca?.files ?? []).map { ($0.path, $0.sha256) }, uniquingKeysWith: { x, _ in x })
            let fb = Dictionary((cb?.files ?? []).map { ($0.path, $0.sha256) }, uniquingKeysWith: { x, _ in x })
            let changed = Set(fa.keys).union(fb.keys).filter { fa[$0] != fb[$0] }.sorted()
            var row = ComponentChange(component: kind.rawValue, inA: ca != nil, inB: cb != nil, same: ca != nil && cb != nil && changed.isEmpty,
                                      filesChanged: changed, tensors: [], tensorsOnlyInA: [], tensorsOnlyInB: [], tensorShapeChanges: [])
            let ta = ca?.tensors ?? [], tb = cb?.tensors ?? []
            let byNameB = Dictionary(tb.map { ($0.name, $0) }, uniquingKeysWith: { x, _ in x })
            let namesA = Set(ta.map(\.name))
            var both: [(ExpertManifest.TensorEntry, ExpertManifest.TensorEntry)] = []
            for x in ta {
                guard let y = byNameB[x.name] else { row.tensorsOnlyInA.append(.init(name: x.name, shape: x.shape, dtype: x.dtype)); continue }
                if x.shape == y.shape { both.append((x, y)) } else { row.tensorShapeChanges.append(.init(name: x.name, shape: Change(a: x.shape, b: y.shape))) }
            }
            row.tensorsOnlyInB = tb.filter { !namesA.contains($0.name) }.map { .init(name: $0.name, shape: $0.shape, dtype: $0.dtype) }
            row.tensors = try changeNorms(both, a, b).sorted {
                ($0.relativeChange ?? .infinity, $1.name) > ($1.relativeChange ?? .infinity, $0.name)
            }
            rows.append(row)
        }
        return rows
    }
}
