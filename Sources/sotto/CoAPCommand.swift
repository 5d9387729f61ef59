import ArgumentParser
import Foundation
import SottoCoAP

/// `sotto coap get|post|put|delete|observe URI`: a CoAP client on libcoap. Unlike libcoap's
/// coap-client it exits non-zero when the exchange fails, and it can repeat a request over one
/// DTLS session to measure round trips.
struct Coap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coap",
        abstract: "Send CoAP requests over DTLS with a PSK (coaps://) or plain UDP (coap://).",
        discussion: """
            The response payload goes to standard output; errors go to standard error. \
            Exit status: 0 when every response has a 2.xx code, 1 when a response has an error \
            code (4.xx, 5.xx), 2 when no response came (timeout, DTLS handshake refused, \
            nothing listening). Keys: hex:..., base64:... or plain text (as coap-client -k takes \
            them); --psk-key-file keeps the key out of the process list.
            """,
        subcommands: [Get.self, Post.self, Put.self, Delete.self, Observe.self])
}

extension Coap {
    struct Connection: ParsableArguments {
        @Argument(help: "coaps://HOST[:PORT]/PATH[?QUERY] (DTLS, default port 5684) or coap://... (plain UDP, 5683).")
        var uri: String

        @Option(help: "The PSK identity (it travels in clear in the DTLS handshake).")
        var pskIdentity: String?

        @Option(help: "The PSK key: hex:..., base64:... or text. Other users can see it in the process list; prefer --psk-key-file.")
        var pskKey: String?

        @Option(help: "A file holding the PSK key (same forms as --psk-key; mode 0600).")
        var pskKeyFile: String?

        @Option(help: "Seconds to wait for the DTLS handshake and for each response.")
        var timeout: Double = 5

        @Flag(name: .shortAndLong, help: "Print the response code and options to standard error.")
        var verbose = false

        func validate() throws {
            guard timeout > 0, timeout <= 3600 else { throw ValidationError("--timeout must be more than 0 and at most 3600 seconds") }
            if pskKey != nil && pskKeyFile != nil { throw ValidationError("give --psk-key or --psk-key-file, not both") }
        }

        var timeoutDuration: Duration { .nanoseconds(Int64(timeout * 1e9)) }

        /// The URI and the security it asks for, or a message naming what is missing.
        func resolve() throws -> (CoAPURI, CoAPSecurity) {
            let uri = try CoAPURI(parsing: self.uri)
            let hasPSK = pskIdentity != nil || pskKey != nil || pskKeyFile != nil
            switch uri.scheme {
            case .coap:
                guard !hasPSK else { throw CoAPError.securityDoesNotMatchScheme(.coap) }
                return (uri, .none)
            case .coaps:
                guard let identity = pskIdentity, pskKey != nil || pskKeyFile != nil else {
                    throw CommandFailure(status: 2, "coaps:// needs --psk-identity and --psk-key or --psk-key-file")
                }
                let key: [UInt8]
                if let path = pskKeyFile {
                    key = try CoAPSecurity.parseKeyFile(try Self.readKeyFile(path))
                } else {
                    key = try CoAPSecurity.parseKey(pskKey!)
                }
                return (uri, try CoAPSecurity.psk(identity: Array(identity.utf8), key: key))
            }
        }

        /// The key file's bytes; warns when others may read it.
        static func readKeyFile(_ path: String) throws -> [UInt8] {
            let fm = FileManager.default
            guard let attributes = try? fm.attributesOfItem(atPath: path) else {
                throw CommandFailure(status: 2, "cannot read PSK key file \(path): no such file or not accessible")
            }
            if let mode = attributes[.posixPermissions] as? Int, mode & 0o077 != 0 {
                printError("warning: PSK key file \(path) is readable by group or others (mode \(String(mode, radix: 8))); run chmod 600 \(path)")
            }
            guard (attributes[.size] as? Int ?? 0) <= 4096, let data = fm.contents(atPath: path) else {
                throw CommandFailure(status: 2, "cannot read PSK key file \(path) (not readable, or larger than 4096 bytes)")
            }
            return Array(data)
        }
    }

    struct Body: ParsableArguments {
        @Option(help: "The request payload, as text.")
        var payload: String?

        @Option(help: "A file whose bytes are the request payload.")
        var payloadFile: String?

        @Option(help: "The Content-Format option (0 text/plain, 40 link-format, 42 octet-stream, 50 json, 60 cbor).")
        var contentFormat: UInt16?

        func validate() throws {
            if payload != nil && payloadFile != nil { throw ValidationError("give --payload or --payload-file, not both") }
        }

        static let maximumFileSize = 64 << 20

        func bytes() throws -> [UInt8] {
            if let payload { return Array(payload.utf8) }
            guard let path = payloadFile else { return [] }
            let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int
            guard let size else { throw CommandFailure(status: 2, "cannot read payload file \(path)") }
            guard size <= Self.maximumFileSize else {
                throw CommandFailure(status: 2, "payload file \(path) is larger than \(Self.maximumFileSize >> 20) MiB")
            }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw CommandFailure(status: 2, "cannot read payload file \(path)")
            }
            return Array(data)
        }
    }

    struct Repetition: ParsableArguments {
        @Option(help: "Send the request this many times, one after the other, over the same session.")
        var count = 1

        @Flag(help: "Print count, failures and p50/p90/p99/max round trip (ms) to standard error.")
        var stats = false

        @Flag(help: "Print those figures as one JSON line to standard output instead.")
        var json = false

        @Flag(help: "Send non-confirmable (NON) requests instead of confirmable (CON) ones.")
        var non = false

        func validate() throws {
            guard (1...10_000_000).contains(count) else { throw ValidationError("--count must be from 1 to 10000000") }
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "GET a resource.")
        @OptionGroup var connection: Connection
        @OptionGroup var repetition: Repetition

        func run() async throws {
            try await Coap.exchange(.get, connection: connection, body: nil, repetition: repetition)
        }
    }

    struct Post: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "POST a payload.")
        @OptionGroup var connection: Connection
        @OptionGroup var body: Body
        @OptionGroup var repetition: Repetition

        func run() async throws {
            try await Coap.exchange(.post, connection: connection, body: body, repetition: repetition)
        }
    }

    struct Put: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "PUT a payload.")
        @OptionGroup var connection: Connection
        @OptionGroup var body: Body
        @OptionGroup var repetition: Repetition

        func run() async throws {
            try await Coap.exchange(.put, connection: connection, body: body, repetition: repetition)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "DELETE a resource.")
        @OptionGroup var connection: Connection
        @OptionGroup var repetition: Repetition

        func run() async throws {
            try await Coap.exchange(.delete, connection: connection, body: nil, repetition: repetition)
        }
    }

    struct Observe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Observe a resource (RFC 7641): print each notification's payload on its own line.",
            discussion: "Runs until --count notifications have come, the server ends the observation, or SIGINT.")
        @OptionGroup var connection: Connection

        @Option(help: "Stop after this many responses (the first response counts).")
        var count: Int?

        func validate() throws {
            if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        }

        func run() async throws {
            try await Coap.guarded {
                let (uri, security) = try connection.resolve()
                let client = try await CoAPClient(uri: uri, security: security, timeout: connection.timeoutDuration)
                var received = 0
                var failed = false
                do {
                    for try await response in client.observe(path: uri.path, query: uri.query) {
                        received += 1
                        if connection.verbose { Coap.describe(response) }
                        if response.code.isSuccess {
                            FileHandle.standardOutput.write(Data(response.payload + [UInt8(ascii: "\n")]))
                        } else {
                            Coap.reportErrorResponse(response, request: "GET \(uri)")
                            failed = true
                        }
                        if let count, received >= count { break }
                    }
                } catch {
                    await client.close()
                    throw error
                }
                await client.close()
                if failed { throw ExitCode(1) }
            }
        }
    }
}

// MARK: - Running requests

extension Coap {
    static func exchange(_ method: CoAPMethod, connection: Connection, body: Body?, repetition: Repetition) async throws {
        try await guarded {
            let (uri, security) = try connection.resolve()
            let payload = try body?.bytes() ?? []
            let client = try await CoAPClient(uri: uri, security: security, timeout: connection.timeoutDuration)
            var samples: [UInt64] = []
            samples.reserveCapacity(repetition.count)
            var errorResponses = 0
            var transportFailures = 0
            var lastTransportError: Error?
            let clock = ContinuousClock()
            for index in 0..<repetition.count {
                let start = clock.now
                do {
                    let response = try await client.request(
                        method, path: uri.path, query: uri.query, payload: payload,
                        contentFormat: body?.contentFormat, confirmable: !repetition.non)
                    let elapsed = clock.now - start
                    if connection.verbose { describe(response) }
                    if response.code.isSuccess {
                        samples.append(nanoseconds(elapsed))
                        // With --count, the payload of the last response only.
                        if index == repetition.count - 1 && !repetition.json {
                            FileHandle.standardOutput.write(Data(response.payload))
                        }
                    } else {
                        errorResponses += 1
                        if repetition.count == 1 || errorResponses == 1 {
                            reportErrorResponse(response, request: "\(method) \(uri)")
                        }
                    }
                } catch let error as CoAPError {
                    transportFailures += 1
                    if repetition.count == 1 { throw error }
                    lastTransportError = error
                    if case .sessionClosed = error { break }
                }
            }
            await client.close()
            if repetition.count > 1 || repetition.stats || repetition.json {
                let statistics = RoundTripStatistics(samples: samples, failures: errorResponses + transportFailures)
                if repetition.json {
                    print(statistics.jsonLine)
                } else if repetition.stats {
                    printError(statistics.summary)
                }
            }
            if let lastTransportError {
                printError("sotto coap: \(transportFailures) request(s) failed; last error: \(lastTransportError)")
                throw ExitCode(2)
            }
            if errorResponses > 0 { throw ExitCode(1) }
        }
    }

    /// Runs `body`, turning CoAP errors into one line on standard error and exit status 2.
    static func guarded(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let error as CoAPError {
            printError("sotto coap: \(error)")
            throw ExitCode(2)
        } catch let failure as CommandFailure {
            printError("sotto coap: \(failure.message)")
            throw ExitCode(failure.status)
        }
    }

    static func reportErrorResponse(_ response: CoAPResponse, request: String) {
        var line = "sotto coap: \(request): \(response.code.summary)"
        // Error responses may carry a diagnostic payload (RFC 7252 section 5.5.2).
        if !response.payload.isEmpty, let text = String(bytes: response.payload, encoding: .utf8) {
            line += ": \(text)"
        }
        printError(line)
    }

    static func describe(_ response: CoAPResponse) {
        var line = response.code.summary
        for option in response.options {
            line += " [\(option.number): \(option.uintValue.map(String.init) ?? option.value.map { String(format: "%02x", $0) }.joined())]"
        }
        line += " \(response.payload.count) bytes"
        printError(line)
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}

/// A failure of the command that is no CoAP error (a file that cannot be read).
struct CommandFailure: Error {
    let status: Int32
    let message: String
    init(status: Int32, _ message: String) {
        self.status = status
        self.message = message
    }
}

private func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}
