import Foundation
import MeshCore

/// The proxy injector: `mesh-controller injector` behind a Service, called by the API server through a
/// MutatingWebhookConfiguration for every pod created outside the control plane.
extension Values {
  static let injectorTLSDirectory = "/var/run/swiftmesh/injector"

  var injector: [ManifestObject] {
    let ns = Self.controlPlaneNamespace
    let workload = Workload(
      name: "swiftmesh-injector", namespace: ns,
      comment: [
        "The proxy injector (`mesh-controller injector`): adds the swiftmesh-init container and the swiftmesh-proxy",
        "sidecar to pods whose namespace or pod template is annotated swiftmesh.io/inject: enabled.",
      ],
      scales: true,
      container: Container(
        name: "injector", image: options.image("mesh-controller"), command: "mesh-controller",
        // The mesh-proxy image carries mesh-proxy-init: it is the init container's image too.
        args: [
          "injector", "--listen", "0.0.0.0:8443", "--tls-cert", "\(Self.injectorTLSDirectory)/tls.crt",
          "--tls-key", "\(Self.injectorTLSDirectory)/tls.key", "--trust-domain=\(trustDomain.name)",
          "--cluster-domain=\(options.clusterDomain)", "--proxy-version=\(options.version)",
          "--proxy-image=\(options.image("mesh-proxy"))", "--proxy-init-image=\(options.image("mesh-proxy"))",
          "--log-level=info",
        ],
        ports: [("webhook", 8443)], probe: .tcp(port: "webhook"), cpuRequest: "50m", memoryLimit: "256Mi",
        volumeMounts: [("tls", Self.injectorTLSDirectory)]),
      volumes: """
        - name: tls
          secret:
            secretName: swiftmesh-injector-tls
        """)
    return [injectorSecret, deployment(workload)] + disruptionBudget(workload) + [
      // The API server calls port 443; the container's port named webhook is 8443.
      service("swiftmesh-injector", namespace: ns, selecting: "swiftmesh-injector", ports: [("webhook", 443)]),
      webhookConfiguration,
    ]
  }

  /// The injector's serving certificate for swiftmesh-injector.swiftmesh.svc (`kubernetes.io/tls`).
  var injectorSecret: ManifestObject {
    let webhook = material?.webhook
    let data = [
      "ca.crt": webhook?.caPEM ?? "", "tls.crt": webhook?.certificatePEM ?? "", "tls.key": webhook?.keyPEM ?? "",
    ]
    return ManifestObject(
      apiVersion: "v1", kind: "Secret", name: "swiftmesh-injector-tls", namespace: Self.controlPlaneNamespace,
      comment: ["The injector's serving certificate; the webhook configuration's caBundle is its CA."],
      body: Self.secretBody(type: "kubernetes.io/tls", data),
      carriesKeyMaterial: true)
  }

  /// Pods created anywhere but in namespaces labelled swiftmesh.io/is-control-plane go to the injector; when it
  /// cannot answer, the pod is created as it is (`failurePolicy: Ignore`): a mesh outage never blocks pods.
  var webhookConfiguration: ManifestObject {
    let caBundle = Data((material?.webhook.caPEM ?? "").utf8).base64EncodedString()
    return ManifestObject(
      apiVersion: "admissionregistration.k8s.io/v1", kind: "MutatingWebhookConfiguration",
      name: "swiftmesh-proxy-injector",
      comment: ["Sends pod creations to the injector (outside the control plane's namespace)."],
      body: """
        webhooks:
        - name: proxy-injector.swiftmesh.io
          clientConfig:
            service:
              name: swiftmesh-injector
              namespace: \(Self.controlPlaneNamespace)
              path: /inject
              port: 443
            caBundle: \(caBundle)
          rules:
          - operations: ["CREATE"]
            apiGroups: [""]
            apiVersions: ["v1"]
            resources: ["pods"]
            scope: Namespaced
          namespaceSelector:
            matchExpressions:
            - key: swiftmesh.io/is-control-plane
              operator: NotIn
              values: ["true"]
          failurePolicy: Ignore
          sideEffects: None
          admissionReviewVersions: ["v1"]
          timeoutSeconds: 10
        """,
      carriesKeyMaterial: true)
  }
}
