import Foundation
import Logging
import NIOCore
import SottoChannels
import SottoConfig

/// The wall clock, in seconds since 1970: what a hopping server computes its ports from. Tests
/// pass a clock of their own.
typealias WallClock = () -> Double

let systemWallClock: WallClock = { Date().timeIntervalSince1970 }

/// One `udp VPORT HOST:hopping` expose of an exit service (docs/channels.md, "An exit gateway in
/// front of a hopping server"). The decisions are `HopFlowPlan`'s (pure, unit-tested); this
/// class adds the event loop's timer and the flows' sockets. Loop-confined.
///
/// Each new flow targets the current epoch's port. A timer at each boundary (`lead` early)
/// retires the flows whose port the server closes there: their socket closes, the entry hears
/// a close and forgets the flow, and the client's next datagram opens a new flow to the
/// then-current port.
final class HopTarget {
    /// What the logs call this expose: "udp 5684 -> 127.0.0.1:hopping".
    let name: String
    private let host: SocketAddress
    /// A flow: its tunnel and its id there.
    struct FlowKey: Hashable, Sendable {
        let session: ObjectIdentifier
        let flow: UInt32
    }

    private var plan: HopFlowPlan<FlowKey>
    private var flows: [FlowKey: ExitUDPFlow] = [:]
    private let clock: WallClock
    private let loop: EventLoop
    private let counters: GatewayCounters
    private let logger: Logger
    private var timer: Scheduled<Void>?
    private var stopped = false

    /// How early the boundary timer fires: the flows whose port closes leave before the server
    /// closes it, so no datagram leaves for a port that is closing. A tenth of the epoch at most.
    let lead: Double

    init(name: String, host: SocketAddress, hopping: HoppingSettings, clock: @escaping WallClock,
         loop: EventLoop, counters: GatewayCounters, logger: Logger) throws {
        self.name = name
        self.host = host
        self.plan = HopFlowPlan(schedule: try PortHopSchedule(secret: hopping.secret, range: hopping.portRange,
                                                              epochSeconds: hopping.epochSeconds))
        self.clock = clock
        self.loop = loop
        self.counters = counters
        self.logger = logger
        self.lead = min(0.05, Double(hopping.epochSeconds) / 10)
    }

    /// Flows that have a port and are still open.
    var openFlows: Int { plan.count }

    /// A new flow to the host at the current epoch's port, tracked until it ends or is retired.
    func makeFlow(session: TunnelSession, flowID: UInt32) -> ExitUDPFlow {
        let key = FlowKey(session: ObjectIdentifier(session), flow: flowID)
        var address = host
        address.port = Int(plan.begin(key, at: clock()))
        let flow = ExitUDPFlow(target: address, session: session, flowID: flowID)
        // Ended for another reason: the entry closed it, it idled out, the tunnel ended.
        flow.onEnded = { [weak self] in
            self?.plan.end(key)
            self?.flows[key] = nil
        }
        flows[key] = flow
        return flow
    }

    /// Arms the boundary timer; it re-arms itself until `stop`.
    func start() {
        loop.assertInEventLoop()
        arm(after: clock())
    }

    func stop() {
        stopped = true
        timer?.cancel()
        timer = nil
    }

    private func arm(after time: Double) {
        guard !stopped else { return }
        let boundary = plan.nextCheck(after: time)
        let delay = max(0, boundary - lead - clock())
        // An epoch is at most a year (EpochSchedule.maximumSeconds): far inside TimeAmount's range.
        timer = loop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9))) { [weak self] in
            self?.boundaryReached(boundary)
        }
    }

    private func boundaryReached(_ boundary: Double) {
        guard !stopped else { return }
        let at = HopFlowPlan<FlowKey>.evaluationTime(now: clock(), boundary: boundary, lead: lead)
        let retired = plan.retire(at: at)
        if !retired.isEmpty {
            var perPort: [UInt16: Int] = [:]
            for (key, port) in retired {
                perPort[port, default: 0] += 1
                flows.removeValue(forKey: key)?.retire()
            }
            counters.hopFlowsRetired += retired.count
            for (port, count) in perPort.sorted(by: { $0.key < $1.key }) {
                // Ports only: the schedule's secret never reaches a log.
                let line = "\(name): retired \(count) flow(s) to port \(port) at the epoch boundary, where the hopping "
                    + "server closes that port; the clients' next datagrams open flows to the current port "
                    + "(\(plan.count) flow(s) stay)"
                logger.info("\(line)")
            }
        }
        // The next boundary after the one just handled (also when the timer fired `lead` early);
        // the same boundary again when the timer fired long before it (the clock was set back).
        arm(after: at)
    }
}
