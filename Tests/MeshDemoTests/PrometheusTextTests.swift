import MeshDemo
import Testing

@Suite("Prometheus text parsing (meshctl stat's reader)")
struct PrometheusTextTests {
  @Test("labels with spaces, braces and escaped quotes; timestamps; +Inf and NaN; comments and bad lines skipped")
  func parse() {
    let text = """
      # HELP request_total Requests.
      # TYPE request_total counter
      request_total{direction="outbound",authority="a b}c:80",path="say \\"hi\\""} 12 1700000000000
      response_latency_ms_bucket{le="+Inf",direction="inbound"} 7
      up 1
        indented_total 3
      temperature NaN
      limit +Inf
      broken{a="x" 5
      no_value
      too_many 1 2 3
      """
    let samples = PrometheusText.parse(text)
    #expect(samples.map(\.name) == ["request_total", "response_latency_ms_bucket", "up", "indented_total", "temperature", "limit"])
    let request = samples[0]
    #expect(request.value == 12, "the timestamp is not the value")
    #expect(request.labels == ["direction": "outbound", "authority": "a b}c:80", "path": "say \"hi\""])
    #expect(samples[1].labels["le"] == "+Inf")
    #expect(samples[1].value == 7)
    #expect(samples[2].labels.isEmpty && samples[2].value == 1)
    #expect(samples[4].value.isNaN)
    #expect(samples[5].value == .infinity)
  }
}
