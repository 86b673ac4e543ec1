// SwiftUI glue over the generated bindings: the sync status and an entity's records as
// @Observable models, updated on the main actor from Converge's listener threads.
import Foundation
import Observation

// The generated records hold only value types; UniFFI does not mark them Sendable yet
// (uniffi-rs#2458), so say it here for Swift 6's strict checking.
extension SyncStatus: @unchecked Sendable {}
extension Record: @unchecked Sendable {}

/// The client's sync status, for a status bar. Keep it while the view shows it.
@MainActor @Observable
public final class ConvergeStatus {
    public private(set) var status: SyncStatus?
    @ObservationIgnored private var handle: ListenerHandle?

    public init(client: ConvergeClient) throws {
        handle = try client.onStatus(listener: Relay { [weak self] status in
            Task { @MainActor in self?.status = status }
        })
    }

    private final class Relay: StatusListener, @unchecked Sendable {
        let deliver: @Sendable (SyncStatus) -> Void
        init(_ deliver: @escaping @Sendable (SyncStatus) -> Void) { self.deliver = deliver }
        func onStatus(status: SyncStatus) { deliver(status) }
    }
}

/// The records of one entity, kept current through record-change callbacks.
@MainActor @Observable
public final class ConvergeRecords {
    public private(set) var records: [Record] = []
    @ObservationIgnored private let client: ConvergeClient
    @ObservationIgnored private let entity: String
    @ObservationIgnored private var handle: ListenerHandle?

    public init(client: ConvergeClient, entity: String) throws {
        self.client = client
        self.entity = entity
        records = try client.list(entity: entity)
        handle = try client.onRecordChange(entity: entity, listener: Relay { [weak self] in
            Task { @MainActor in self?.reload() }
        })
    }

    private func reload() {
        if let fresh = try? client.list(entity: entity) { records = fresh }
    }

    private final class Relay: RecordListener, @unchecked Sendable {
        let changed: @Sendable () -> Void
        init(_ changed: @escaping @Sendable () -> Void) { self.changed = changed }
        func onChange(entity: String, recordId: String, record: Record?) { changed() }
        func onMissed(count: UInt64) { changed() }
    }
}
