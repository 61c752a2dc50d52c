/// The CustomResourceDefinitions: Link (multi-cluster), ServiceProfile (per-route policy) and TrafficSplit.
/// Field names follow `Sources/MeshKube/Resources/MeshResources.swift`; `Tests/MeshKubeTests` checks the
/// schemas against those types.
extension InstallManifest {
  static let crds: [ManifestObject] = [
    ManifestObject(
      apiVersion: "apiextensions.k8s.io/v1", kind: "CustomResourceDefinition", name: "links.multicluster.swiftmesh.io",
      comment: [
        "SwiftMesh custom resources: Link (multi-cluster), ServiceProfile (per-route policy) and TrafficSplit.",
        "Apply first: every other object may be of these kinds (`meshctl install --crds`).",
      ],
      body: #"""
spec:
  group: multicluster.swiftmesh.io
  scope: Namespaced
  names:
    kind: Link
    listKind: LinkList
    plural: links
    singular: link
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - name: Target
      type: string
      jsonPath: .spec.targetClusterName
    - name: Gateway
      type: string
      jsonPath: .spec.gatewayAddresses[0]
    - name: Port
      type: integer
      jsonPath: .spec.gatewayPort
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        description: A link to another cluster; the service mirror follows it and mirrors the target's exported services.
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [targetClusterName]
            properties:
              targetClusterName:
                description: Name of the target cluster; mirrors are called <service>-<targetClusterName>.
                type: string
                minLength: 1
              targetClusterDomain:
                description: The target cluster's DNS domain (default cluster.local).
                type: string
              clusterCredentialsSecret:
                description: Name of the Secret (same namespace, type mirror.swiftmesh.io/remote-kubeconfig, key kubeconfig) holding the target's kubeconfig.
                type: string
              gatewayAddresses:
                description: "Addresses of the target's gateway: IP addresses or DNS names (resolved by the mirror, periodically). The addresses the target's gateway Service publishes replace them unless the Link is annotated mirror.swiftmesh.io/follow-gateway-service: \"false\"."
                type: array
                items:
                  type: string
              gatewayPort:
                description: The target gateway's port (mc-gateway, default 4143).
                type: integer
                minimum: 1
                maximum: 65535
              gatewayIdentity:
                description: The identity the target gateway presents (mutual TLS).
                type: string
              probeSpec:
                description: The gateway probe (GET path on the gateway's admin port, over mutual TLS).
                type: object
                properties:
                  path:
                    type: string
                  port:
                    type: integer
                    minimum: 1
                    maximum: 65535
                  period:
                    description: A Go duration, e.g. 3s.
                    type: string
                  timeout:
                    description: A Go duration, e.g. 30s.
                    type: string
                  failureThreshold:
                    type: integer
                    minimum: 1
              selector:
                description: Which of the target's Services to mirror (default mirror.swiftmesh.io/exported=true).
                type: object
                properties:
                  matchLabels:
                    type: object
                    additionalProperties:
                      type: string
                  matchExpressions:
                    type: array
                    items:
                      type: object
                      required: [key, operator]
                      properties:
                        key:
                          type: string
                        operator:
                          type: string
                          enum: [In, NotIn, Exists, DoesNotExist]
                        values:
                          type: array
                          items:
                            type: string
          status:
            type: object
            properties:
              mirroredServices:
                description: The mirror Services this Link keeps in the source cluster (namespace/name).
                type: array
                items:
                  type: string
              conditions:
                type: array
                items:
                  type: object
                  required: [type, status]
                  properties:
                    type:
                      type: string
                    status:
                      type: string
                      enum: ["True", "False", "Unknown"]
                    reason:
                      type: string
                    message:
                      type: string
                    lastTransitionTime:
                      type: string
                      format: date-time
                    observedGeneration:
                      type: integer
                      format: int64
"""#),
    ManifestObject(
      apiVersion: "apiextensions.k8s.io/v1", kind: "CustomResourceDefinition", name: "serviceprofiles.policy.swiftmesh.io",
      body: #"""
spec:
  group: policy.swiftmesh.io
  scope: Namespaced
  names:
    kind: ServiceProfile
    listKind: ServiceProfileList
    plural: serviceprofiles
    singular: serviceprofile
    shortNames: [sp]
  versions:
  - name: v1alpha2
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        description: Per-route policy for a service (routes with metrics, timeouts and retries; a retry budget). Named <service>.<namespace>.svc.<cluster-domain>.
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            properties:
              routes:
                type: array
                items:
                  type: object
                  required: [name, condition]
                  properties:
                    name:
                      type: string
                    condition:
                      description: Request match; all/any/not nest further matches.
                      type: object
                      properties:
                        method:
                          type: string
                        pathRegex:
                          type: string
                        all:
                          type: array
                          items:
                            type: object
                            x-kubernetes-preserve-unknown-fields: true
                        any:
                          type: array
                          items:
                            type: object
                            x-kubernetes-preserve-unknown-fields: true
                        not:
                          type: object
                          x-kubernetes-preserve-unknown-fields: true
                    responseClasses:
                      type: array
                      items:
                        type: object
                        required: [condition]
                        properties:
                          condition:
                            type: object
                            properties:
                              status:
                                type: object
                                properties:
                                  min:
                                    type: integer
                                    minimum: 100
                                    maximum: 599
                                  max:
                                    type: integer
                                    minimum: 100
                                    maximum: 599
                          isFailure:
                            type: boolean
                    isRetryable:
                      type: boolean
                    timeout:
                      description: A Go duration, e.g. 250ms.
                      type: string
              retryBudget:
                type: object
                required: [retryRatio, minRetriesPerSecond, ttl]
                properties:
                  retryRatio:
                    type: number
                    minimum: 0
                  minRetriesPerSecond:
                    type: integer
                    minimum: 0
                  ttl:
                    description: A Go duration, e.g. 10s.
                    type: string
"""#),
    ManifestObject(
      apiVersion: "apiextensions.k8s.io/v1", kind: "CustomResourceDefinition", name: "trafficsplits.split.swiftmesh.io",
      body: #"""
spec:
  group: split.swiftmesh.io
  scope: Namespaced
  names:
    kind: TrafficSplit
    listKind: TrafficSplitList
    plural: trafficsplits
    singular: trafficsplit
    shortNames: [ts]
  versions:
  - name: v1alpha1
    served: true
    storage: true
    additionalPrinterColumns:
    - name: Service
      type: string
      jsonPath: .spec.service
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        description: A weighted split of the traffic clients send to an apex service across backend services (shaped like SMI's TrafficSplit, in the mesh's own group).
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [service, backends]
            properties:
              service:
                description: The apex service clients address.
                type: string
              backends:
                type: array
                minItems: 1
                items:
                  type: object
                  required: [service, weight]
                  properties:
                    service:
                      type: string
                    weight:
                      type: integer
                      minimum: 0
"""#),
  ]
}
