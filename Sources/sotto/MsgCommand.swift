import ArgumentParser
import Foundation
import SottoChannels
import SottoCoAP
import SottoConfig

/// `sotto msg send|recv`: sealed-sender messages through a `sotto coap-server` mailbox
/// (docs/channels.md). The DTLS identity comes from the channel (per epoch, or per session), and
/// the sender's name travels only inside the sealed envelope.
struct Msg: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "msg",
        abstract: "Send and receive sealed-sender messages through a CoAP mailbox.",
        discussion: """
            Both ends need the same [[channel]] (name and secret) in their configuration. \
            Exit status: 0 when everything went through, 1 when the server answered with an \
            error code or an envelope was rejected, 2 when the server could not be reached or \
            the configuration is wrong.
            """,
        subcommands: [Send.self, Recv.self])
}

extension Msg {
    struct Common: ParsableArguments {
        @Option(name: .shortAndLong, help: "The TOML configuration with the [[channel]].")
        var config: String

        @Option(help: "The [[channel]] name.")
        var channel: String

        @Option(help: "coaps://HOST[:PORT] of the mailbox server (default: the channel's 'server').")
        var server: String?

        @Option(help: "Seconds to wait for the DTLS handshake and for each response.")
        var timeout: Double = 5

        @Flag(name: .shortAndLong, help: "Print the identity used and each response code to standard error.")
        var verbose = false

        func validate() throws {
            guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be more than 0 and at most 3600 seconds") }
        }
    }

    struct Send: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Seal a message and POST it to a box.")
        @OptionGroup var common: Common

        @Option(help: "The mailbox to deliver to (1 to 64 of A-Z a-z 0-9 - _ .).")
        var to: String

        @Option(help: "The message, as text.")
        var text: String?

        @Option(help: "A file whose bytes are the message.")
        var file: String?

        @Option(help: "The sender name sealed inside the envelope (default: the channel's 'sender').")
        var from: String?

        @Option(help: "Seconds the server keeps the envelope (default: the server's).")
        var ttl: Int?

        func validate() throws {
            guard (text == nil) != (file == nil) else { throw ValidationError("give --text or --file (one of them)") }
            if let ttl, ttl < 1 { throw ValidationError("--ttl must be at least 1 second") }
        }

        func run() async throws {
            try await Msg.guarded {
                let now = Date().timeIntervalSince1970
                let context = try MsgContext(common, now: now)
                try MsgContext.checkBox(to)
                guard let sender = from ?? context.settings.sender else {
                    throw CommandFailure(status: 2, "give --from NAME or set sender = \"NAME\" in the channel's [[channel]]")
                }
                let message = try readMessage()
                let envelope = try SealedEnvelope.seal(message, sender: sender, channel: context.channel, at: now)
                let client = try await context.connect(now: now)
                let response: CoAPResponse
                do {
                    response = try await client.request(.post, path: "/mb/\(to)", query: ttl.map { ["ttl=\($0)"] } ?? [],
                                                        payload: envelope, contentFormat: 42)
                } catch {
                    await client.close()
                    throw error
                }
                await client.close()
                if common.verbose { printLine("\(response.code.summary) for POST /mb/\(to)") }
                guard response.code.isSuccess else {
                    Msg.reportErrorResponse(response, request: "POST /mb/\(to)")
                    throw ExitCode(1)
                }
                let location = response.options.filter { $0.number == MsgContext.locationPathOption }
                    .map { String(decoding: $0.value, as: UTF8.self) }.joined(separator: "/")
                printLine("sent: \(message.count)-byte message sealed in a \(envelope.count)-byte envelope, stored as "
                    + (location.isEmpty ? "box \(to)" : "/\(location)"))
            }
        }

        private func readMessage() throws -> [UInt8] {
            if let text { return Array(text.utf8) }
            let path = file!
            let limit = SealedEnvelope.maximumMessageLength
            guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int,
                  let data = size <= limit ? FileManager.default.contents(atPath: path) : nil
            else {
                throw CommandFailure(status: 2, "cannot read message file \(path) (missing, unreadable, or larger than \(limit) bytes)")
            }
            return Array(data)
        }
    }

    struct Recv: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "GET a box's envelopes, open those of the channel and print them as 'SENDER: MESSAGE'.",
            discussion: """
                Rejected envelopes (tampered, replayed, wrong epoch, another channel's) get one \
                line each on standard error. Message ids already read are kept in \
                STATE_DIR/channels/CHANNEL.seen (mode 0600), so a message delivered twice is \
                reported as replayed. --delete acknowledges what was opened (and replays), and \
                leaves other channels' envelopes in the box.
                """)
        @OptionGroup var common: Common

        @Option(help: "The mailbox to read.")
        var box: String

        @Flag(help: "Delete the envelopes that were opened (or were replays) from the box.")
        var delete = false

        /// Bounds the loop over pages of a GET: 1000 pages of up to 64 envelopes.
        static let maximumPages = 1000

        func run() async throws {
            try await Msg.guarded {
                let now = Date().timeIntervalSince1970
                let context = try MsgContext(common, now: now)
                try MsgContext.checkBox(box)
                var replayGuard = try context.loadReplayRecord()
                let client = try await context.connect(now: now)
                var opened = 0
                var rejected = 0
                var acknowledge: [Int64] = []
                var failure: Error?
                do {
                    var after: Int64 = 0
                    for _ in 0..<Self.maximumPages {
                        let response = try await client.request(.get, path: "/mb/\(box)", query: after > 0 ? ["after=\(after)"] : [])
                        if common.verbose { printLine("\(response.code.summary) for GET /mb/\(box), \(response.payload.count) bytes") }
                        guard response.code.isSuccess else {
                            Msg.reportErrorResponse(response, request: "GET /mb/\(box)")
                            throw ExitCode(1)
                        }
                        let frames = try EnvelopeFraming.decode(response.payload)
                        guard let last = frames.last else { break }
                        for entry in Inbox.open(frames, channel: context.channel, at: now, replayGuard: &replayGuard) {
                            switch entry.result {
                            case .success(let message):
                                opened += 1
                                let shown = Inbox.displayText(message.body) ?? "(\(message.body.count) bytes, not text)"
                                FileHandle.standardOutput.write(Data("\(message.sender): \(shown)\n".utf8))
                            case .failure(let error):
                                rejected += 1
                                printLine("sotto msg: envelope \(entry.id) in box \(box) rejected: \(error)")
                            }
                            if entry.isAcknowledgeable { acknowledge.append(entry.id) }
                        }
                        // Ids grow (docs/coap-server.md); a server that repeats a page would loop.
                        guard last.id > after else { break }
                        after = last.id
                    }
                    // Record before deleting: a message deleted but not recorded could come back unnoticed.
                    try context.saveReplayRecord(replayGuard)
                    if delete {
                        for payload in Inbox.deletePayloads(acknowledge) {
                            let response = try await client.request(.delete, path: "/mb/\(box)", payload: payload)
                            guard response.code.isSuccess else {
                                Msg.reportErrorResponse(response, request: "DELETE /mb/\(box)")
                                throw ExitCode(1)
                            }
                        }
                    }
                } catch {
                    failure = error
                    // What was printed must still count as received, or a replay of it would pass.
                    try? context.saveReplayRecord(replayGuard)
                }
                await client.close()
                if let failure { throw failure }
                var summary = "\(opened) message(s) opened, \(rejected) rejected"
                if delete { summary += ", \(acknowledge.count) deleted from box \(box)" }
                if replayGuard.evicted > 0 { summary += "; the replay record dropped \(replayGuard.evicted) id(s) early" }
                printLine(summary)
                if rejected > 0 { throw ExitCode(1) }
            }
        }
    }
}

// MARK: - Shared steps

/// The channel, server and credentials one `sotto msg` run works with.
struct MsgContext {
    let config: SottoConfig
    let settings: ChannelSettings
    let channel: Channel
    let host: String
    let port: UInt16
    let common: Msg.Common

    /// RFC 7252 section 5.10.7.
    static let locationPathOption: UInt16 = 8

    init(_ common: Msg.Common, now: Double) throws {
        self.common = common
        config = try SottoConfig.load(path: common.config)
        for warning in config.warnings { printLine("warning: \(warning)") }
        guard let settings = config.channels.first(where: { $0.name == common.channel }) else {
            let names = config.channels.map(\.name)
            throw CommandFailure(status: 2, names.isEmpty
                ? "\(common.config) has no [[channel]]; add one (docs/channels.md)"
                : "\(common.config) has no channel '\(common.channel)'; channels: \(names.joined(separator: ", "))")
        }
        self.settings = settings
        channel = try Channel(name: settings.name, secret: settings.secret,
                              identityMode: IdentityMode(rawValue: settings.identity.rawValue) ?? .perChannel,
                              epochSeconds: settings.epochSeconds, maxAgeSeconds: settings.maxMessageAgeSeconds)
        guard let serverText = common.server ?? settings.server else {
            throw CommandFailure(status: 2, "no server: give --server coaps://HOST[:PORT] or set server in channel '\(settings.name)'")
        }
        let uri = try CoAPURI(parsing: serverText)
        guard uri.scheme == .coaps else {
            throw CommandFailure(status: 2, "\(serverText): channels use DTLS; write coaps://")
        }
        host = uri.host
        // [hopping]: the server's port follows the schedule; the URI's port is then ignored.
        if let hopping = config.hopping {
            let schedule = try PortHopSchedule(secret: hopping.secret, range: hopping.portRange, epochSeconds: hopping.epochSeconds)
            port = schedule.clientPort(at: now)
        } else {
            port = uri.port
        }
    }

    static func checkBox(_ box: String) throws {
        if let problem = MailboxName.problem(Array(box.utf8)) {
            throw CommandFailure(status: 2, "box '\(box)': \(problem)")
        }
    }

    /// A DTLS session with the channel's identity of this epoch (or a throwaway one).
    func connect(now: Double) async throws -> CoAPClient {
        let credential = PrivateIdentity.credential(for: channel, at: now)
        if common.verbose {
            printLine("DTLS-PSK identity \(credential.identityText) (\(credential.mode.rawValue), epoch \(credential.epoch)) "
                + "to \(host.contains(":") ? "[\(host)]" : host):\(port)")
        }
        let security = try CoAPSecurity.psk(identity: credential.identity, key: credential.key)
        let seconds = common.timeout
        return try await CoAPClient(host: host, port: port, security: security, timeout: .nanoseconds(Int64(seconds * 1e9)))
    }

    var replayRecordPath: String { config.stateDir + "/channels/" + settings.name + ".seen" }

    func loadReplayRecord() throws -> ReplayGuard {
        let path = replayRecordPath
        guard FileManager.default.fileExists(atPath: path) else { return ReplayGuard() }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CommandFailure(status: 2, "cannot read the replay record \(path)")
        }
        do {
            return try ReplayGuard(serialized: Array(data))
        } catch let error as ReplayGuard.FormatError {
            throw CommandFailure(status: 2, "the replay record \(path) is damaged (\(error)); move it away to start "
                + "a new one (messages read before could then be replayed once)")
        }
    }

    /// Written to a temporary file and renamed, so a crash leaves the old record or the new one.
    func saveReplayRecord(_ replayGuard: ReplayGuard) throws {
        let path = replayRecordPath
        let folder = (path as NSString).deletingLastPathComponent
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw CommandFailure(status: 2, "cannot create \(folder) for the replay record: \(error.localizedDescription)")
        }
        let temporary = path + ".tmp-\(getpid())"
        guard fm.createFile(atPath: temporary, contents: Data(replayGuard.serialized()), attributes: [.posixPermissions: 0o600]),
              rename(temporary, path) == 0
        else {
            try? fm.removeItem(atPath: temporary)
            throw CommandFailure(status: 2, "cannot write the replay record \(path)")
        }
    }
}

extension Msg {
    /// Runs `body`, turning known errors into one line on standard error and an exit status.
    static func guarded(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as CoAPError {
            printLine("sotto msg: \(error)")
            throw ExitCode(2)
        } catch let failure as CommandFailure {
            printLine("sotto msg: \(failure.message)")
            throw ExitCode(failure.status)
        } catch let error as ConfigError {
            printLine("sotto msg: \(error)")
            throw ExitCode(2)
        } catch let error as ChannelError {
            printLine("sotto msg: \(error)")
            throw ExitCode(2)
        } catch let error as EnvelopeError {
            printLine("sotto msg: \(error)")
            throw ExitCode(2)
        } catch let problem as EnvelopeFraming.Problem {
            printLine("sotto msg: the server's answer is not an envelope list: \(problem)")
            throw ExitCode(1)
        }
    }

    static func reportErrorResponse(_ response: CoAPResponse, request: String) {
        var line = "sotto msg: \(request): \(response.code.summary)"
        // Error responses may carry a diagnostic payload (RFC 7252 section 5.5.2).
        if !response.payload.isEmpty, let text = Inbox.displayText(response.payload) { line += ": \(text)" }
        printLine(line)
    }
}

private func printLine(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
