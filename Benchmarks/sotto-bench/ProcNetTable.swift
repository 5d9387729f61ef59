/// Reads /proc/net/{tcp,udp}[6] (Linux proc(5)): one socket a line, `local_address` as
/// hex address and hex port, `st` as the hex TCP state. Pure: the text in, a verdict out.
enum ProcNetTable {
    enum State: String {
        /// TCP_LISTEN
        case tcpListen = "0A"
        /// A bound, unconnected UDP socket shows TCP_CLOSE.
        case udpUnconnected = "07"
    }

    static func hasSocket(in table: String, port: UInt16, state: State) -> Bool {
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3 else { continue }
            let local = fields[1].split(separator: ":")
            guard local.count == 2, let localPort = UInt16(local[1], radix: 16) else { continue }
            if localPort == port, fields[3].uppercased() == state.rawValue { return true }
        }
        return false
    }
}
