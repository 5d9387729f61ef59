import NIOSOCKS
import SottoTunnel
import XCTest
@testable import SottoGateway

/// A flow the exit closed before it opened becomes the SOCKS reply the application sees
/// (RFC 1928 section 6), so the reply must say why rather than a generic failure.
final class CloseReasonSOCKSReplyTests: XCTestCase {
    func testAnUnexposedPortOrARefusingTargetIsReportedAsConnectionRefused() {
        XCTAssertEqual(CloseReason.noSuchPort.socksReply, .refused)
        XCTAssertEqual(CloseReason.targetRefused.socksReply, .refused)
        XCTAssertEqual(SOCKSServerReply.refused.value, 0x05)
    }

    func testAnUnreachableTargetIsReportedAsHostUnreachable() {
        XCTAssertEqual(CloseReason.targetUnreachable.socksReply, .hostUnreachable)
        XCTAssertEqual(SOCKSServerReply.hostUnreachable.value, 0x04)
    }

    func testAnIdleTimeoutIsReportedAsTTLExpired() {
        XCTAssertEqual(CloseReason.idleTimeout.socksReply, .ttlExpired)
        XCTAssertEqual(SOCKSServerReply.ttlExpired.value, 0x06)
    }

    func testLimitProtocolErrorAndANormalCloseBeforeOpenedAreGeneralServerFailures() {
        for reason in [CloseReason.limitReached, .protocolError, .normal] {
            XCTAssertEqual(reason.socksReply, .serverFailure, "\(reason)")
        }
        XCTAssertEqual(SOCKSServerReply.serverFailure.value, 0x01)
    }

    func testNoCloseReasonIsReportedAsSuccess() {
        for reason in CloseReason.allCases {
            XCTAssertNotEqual(reason.socksReply, .succeeded, "\(reason)")
        }
    }
}
