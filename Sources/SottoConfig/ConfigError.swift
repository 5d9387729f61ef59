/// A configuration error a person can act on: which file, which key, what is wrong.
///
/// `key` is a path into the document: `socks.listen`, `peer[1] 'home'.public_key`,
/// `service[2] 'coap'.expose[3]`; array entries count from 1, the way people count them in a file.
/// It is empty for errors about the file as a whole (unreadable, not TOML) and holds
/// `line L, column C` for TOML syntax errors.
///
/// No message ever contains a secret value (private key, PSK, password) from the file or a key file:
/// messages say how long or what kind a bad value is, never what it is.
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    public let file: String
    public let key: String
    public let message: String

    public init(file: String, key: String, message: String) {
        self.file = file
        self.key = key
        self.message = message
    }

    public var description: String {
        key.isEmpty ? "\(file): \(message)" : "\(file): \(key): \(message)"
    }
}
