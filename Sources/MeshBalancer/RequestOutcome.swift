/// How a request sent to a picked endpoint ended.
public enum RequestOutcome: Hashable, Sendable {
  /// A response arrived and the endpoint is healthy. Updates the RTT estimate and resets the
  /// endpoint's consecutive-failure count.
  case success
  /// The request failed because of the endpoint (connection error, 5xx the proxy classifies as a
  /// failure). Updates the RTT estimate (as tower does for any response) and counts towards
  /// failure accrual.
  case failure
  /// The request was abandoned (client went away, timeout elsewhere). Releases the pending slot;
  /// the elapsed time only raises the RTT estimate, and failure accrual ignores it.
  case cancelled
}
