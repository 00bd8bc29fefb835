{{/* Names. With the release name "edgeway" they match examples/kubernetes. */}}
{{- define "edgeway.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "edgeway.labels" -}}
app.kubernetes.io/part-of: edgeway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "edgeway.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "edgeway.secretName" -}}
{{- .Values.clusterSecret.existingSecret | default (printf "%s-cluster-secret" (include "edgeway.fullname" .)) -}}
{{- end -}}

{{/*
Refuse values that would deploy something broken or insecure. Included by every
template that renders an object, so no object renders without them.
*/}}
{{- define "edgeway.validate" -}}
{{- $s := .Values.clusterSecret -}}
{{- if and $s.existingSecret $s.value -}}
{{- fail "clusterSecret: set existingSecret or value, not both" -}}
{{- end -}}
{{- if not (or $s.existingSecret $s.value) -}}
{{- fail "clusterSecret: no cluster secret. Create one and set clusterSecret.existingSecret (kubectl -n kube-system create secret generic edgeway-cluster-secret --from-literal=cluster-secret=\"$(head -c 32 /dev/urandom | base64)\"), or set clusterSecret.value. The chart ships no default." -}}
{{- end -}}
{{- if and $s.value (lt (len (toString $s.value)) 16) -}}
{{- fail "clusterSecret.value: shorter than 16 characters; generate one with: head -c 32 /dev/urandom | base64" -}}
{{- end -}}
{{- if not $s.key -}}
{{- fail "clusterSecret.key: must name the Secret's key holding the cluster secret" -}}
{{- end -}}
{{- if not (or .Values.cloudCIDR .Values.edgeCIDR) -}}
{{- fail "cloudCIDR/edgeCIDR: list at least one segment CIDR (one per LAN); without them every node is in one segment and edgeway routes nothing" -}}
{{- end -}}
{{- if not (or .Values.bootstrap .Values.relays) -}}
{{- fail "relays/bootstrap: list the relay nodes (relays) or the agents to dial (bootstrap); without them no agent finds another" -}}
{{- end -}}
{{- if not (has .Values.onAgentDown (list "continue" "fail")) -}}
{{- fail (printf "onAgentDown: %q is not continue or fail" (toString .Values.onAgentDown)) -}}
{{- end -}}
{{- range $i, $r := .Values.relays -}}
{{- if not $r.nodeName -}}
{{- fail (printf "relays[%d].nodeName: required" $i) -}}
{{- end -}}
{{- if not $r.advertiseAddress -}}
{{- fail (printf "relays[%d].advertiseAddress: required (the relay's public address)" $i) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* p2p.bootstrap for the agents, as a TOML array: .Values.bootstrap, or one TCP and one
QUIC multiaddr per relay address. */}}
{{- define "edgeway.bootstrap" -}}
{{- $addrs := list -}}
{{- if .Values.bootstrap -}}
{{- $addrs = .Values.bootstrap -}}
{{- else -}}
{{- $port := int .Values.p2p.port -}}
{{- range .Values.relays -}}
{{- $peer := "" -}}
{{- if .peerId -}}{{- $peer = printf "/p2p/%s" .peerId -}}{{- end -}}
{{- $hosts := .advertiseAddress -}}
{{- if kindIs "string" $hosts -}}{{- $hosts = list $hosts -}}{{- end -}}
{{- range $hosts -}}
{{- $proto := "dns" -}}
{{- if contains ":" . -}}
{{- $proto = "ip6" -}}
{{- else if regexMatch "^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$" . -}}
{{- $proto = "ip4" -}}
{{- end -}}
{{- $addrs = append $addrs (printf "/%s/%s/tcp/%d%s" $proto . $port $peer) -}}
{{- $addrs = append $addrs (printf "/%s/%s/udp/%d/quic-v1%s" $proto . $port $peer) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson $addrs -}}
{{- end -}}

{{/* The agent's config file. Call with (dict "root" $ "bootstrap" <TOML array>). */}}
{{- define "edgeway.agentToml" -}}
{{- $v := .root.Values -}}
# Rendered by the edgeway chart; README.md ("Agent configuration") describes each key.
# One file for many nodes: segments come from the CIDR lists, nodeName from $NODE_NAME.
stateDir = {{ $v.stateDir | toJson }}
cloudCIDR = {{ $v.cloudCIDR | default list | toJson }}
edgeCIDR = {{ $v.edgeCIDR | default list | toJson }}
nativeCIDRs = {{ $v.nativeCIDRs | default list | toJson }}

[api]
socket = {{ printf "%s/agent.sock" $v.runDir | toJson }}

[tunnel]
device = {{ $v.tunnel.device | toJson }}
mtu = {{ int $v.tunnel.mtu }}
table = {{ int $v.tunnel.table }}
queueLen = {{ int $v.tunnel.queueLen }}

[p2p]
listen = {{ list (printf "/ip4/0.0.0.0/tcp/%d" (int $v.p2p.port)) (printf "/ip4/0.0.0.0/udp/%d/quic-v1" (int $v.p2p.port)) | toJson }}
bootstrap = {{ .bootstrap }}
clusterSecretFile = {{ printf "/etc/edgeway/secret/%s" $v.clusterSecret.key | toJson }}
peerGraceSecs = {{ int $v.p2p.peerGraceSecs }}
announceIntervalSecs = {{ int $v.p2p.announceIntervalSecs }}
{{- end -}}

{{/*
The pod template of both workloads. Call with a dict:
  root: $; component: "agent" or "relay"; configKey: the ConfigMap key;
  resources, tolerations; relayOperator: "In" or "NotIn" (node affinity on the relays).
*/}}
{{- define "edgeway.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $config := printf "/etc/edgeway/%s" .configKey -}}
{{- $status := list "edgeway-agent" "--config" $config "status" "--output" "json" -}}
{{- $ready := list "edgeway-agent" "--config" $config "status" "--ready" "--output" "json" -}}
metadata:
  labels:
    {{- include "edgeway.labels" $root | nindent 4 }}
    app.kubernetes.io/name: edgeway-{{ .component }}
    app.kubernetes.io/component: {{ .component }}
  annotations:
    # A config change rolls the pods: the agent reads its config at start.
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    kubectl.kubernetes.io/default-container: edgeway-agent
spec:
  serviceAccountName: {{ include "edgeway.fullname" $root }}
  automountServiceAccountToken: false   # the agent does not use the API server
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  # The node's network namespace: edgeway0, table {{ int $v.tunnel.table }}, the plugin's rules, libp2p.
  hostNetwork: true
  # The node's resolver: cluster DNS runs in pods that may need edgeway.
  dnsPolicy: Default
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: 30
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if $v.relays }}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchFields:
              # One agent per node: relay nodes run the relay workload, the others the agent.
              - key: metadata.name
                operator: {{ .relayOperator }}
                values:
                  {{- range $v.relays }}
                  - {{ .nodeName | quote }}
                  {{- end }}
  {{- end }}
  {{- with .tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: edgeway-agent
      image: {{ include "edgeway.image" $root | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command: ["edgeway-agent"]
      args: ["--config", {{ $config | quote }}, "run"]
      env:
        - name: NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: EDGEWAY_CONFIG
          value: {{ $config | quote }}
        - name: EDGEWAY_LOG
          value: {{ $v.logLevel | quote }}
      ports:
        - name: p2p-tcp
          containerPort: {{ int $v.p2p.port }}
          hostPort: {{ int $v.p2p.port }}
          protocol: TCP
        - name: p2p-quic
          containerPort: {{ int $v.p2p.port }}
          hostPort: {{ int $v.p2p.port }}
          protocol: UDP
      securityContext:
        # Sysctls of the node's network namespace (ip_forward, rp_filter) need a writable
        # /proc/sys, which the runtime gives privileged containers only; plus TUN and
        # netlink (CAP_NET_ADMIN).
        privileged: true
      # The agent serves /readyz on its unix socket only; `status --ready` asks it
      # there and exits non-zero when it does not answer or is not ready.
      readinessProbe:
        exec:
          command: {{ $ready | toJson }}
        initialDelaySeconds: 2
        periodSeconds: 10
        timeoutSeconds: 8
        failureThreshold: 3
      livenessProbe:
        exec:
          command: {{ $status | toJson }}
        initialDelaySeconds: 30
        periodSeconds: 30
        timeoutSeconds: 10
        failureThreshold: 5
      {{- with .resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: config
          mountPath: {{ $config | quote }}
          subPath: {{ .configKey | quote }}
          readOnly: true
        - name: cluster-secret
          mountPath: /etc/edgeway/secret
          readOnly: true
        - name: state
          mountPath: {{ $v.stateDir | quote }}
        - name: run
          mountPath: {{ $v.runDir | quote }}
        - name: dev-tun
          mountPath: /dev/net/tun
    - name: install-cni
      image: {{ include "edgeway.image" $root | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      command: ["edgeway-agent"]
      args:
        - --config
        - {{ $config | quote }}
        - install-cni
        - --cni-bin-dir
        - /host/opt/cni/bin
        - --cni-conf-dir
        - /host/etc/cni/net.d
        - --on-agent-down
        - {{ $v.onAgentDown | quote }}
        - --watch
      env:
        - name: EDGEWAY_LOG
          value: {{ $v.logLevel | quote }}
      securityContext:
        # Not privileged: it only writes files into the two host directories below.
        privileged: false
        allowPrivilegeEscalation: false
        runAsUser: 0
        capabilities:
          drop: ["ALL"]
          add: ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
      {{- with $v.installCNIResources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: config
          mountPath: {{ $config | quote }}
          subPath: {{ .configKey | quote }}
          readOnly: true
        - name: cni-bin
          mountPath: /host/opt/cni/bin
        - name: cni-conf
          mountPath: /host/etc/cni/net.d
  volumes:
    - name: config
      configMap:
        name: {{ include "edgeway.fullname" $root }}-config
    - name: cluster-secret
      secret:
        secretName: {{ include "edgeway.secretName" $root | quote }}
        defaultMode: 0400   # octal: the agent warns about a readable secret
        items:
          - key: {{ $v.clusterSecret.key | quote }}
            path: {{ $v.clusterSecret.key | quote }}
    - name: state
      hostPath:
        path: {{ $v.stateDir | quote }}
        type: DirectoryOrCreate
    - name: run
      hostPath:
        path: {{ $v.runDir | quote }}
        type: DirectoryOrCreate
    - name: dev-tun
      hostPath:
        path: /dev/net/tun
        type: CharDevice
    - name: cni-bin
      hostPath:
        path: {{ $v.cni.binDir | quote }}
        type: DirectoryOrCreate
    - name: cni-conf
      hostPath:
        path: {{ $v.cni.confDir | quote }}
        type: DirectoryOrCreate
{{- end -}}
